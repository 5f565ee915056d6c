"""Prompt Guard 2: jailbreak and prompt-injection scores, over the whole text in 512-token windows.

Texts are scored as given (the model card's recipe) or, with `preprocessing="llamafirewall"`,
first read as Meta's LlamaFirewall scanner reads them (`guard.core.prompt_guard_text`), which
undoes whitespace tricks such as `I g n o r e`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from guard.core import limits
from guard.core.conversation import Conversation
from guard.core.errors import ModelLoadError, TooLarge
from guard.core.prompt_guard_text import (  # the score types: plain data, in the core
    MessageScore,
    PromptGuardInfo,
    TextScore,
    check_preprocessing,
    collapse_spacing,
)
from guard.engines.llama_guard import _load_error, pick_device

PROMPT_GUARD_MODELS = {
    "86m": "meta-llama/Llama-Prompt-Guard-2-86M",
    "22m": "meta-llama/Llama-Prompt-Guard-2-22M",
}
# Meta's LlamaFirewall blocks at this score; shown as a reference line, not applied here.
FIREWALL_THRESHOLD = 0.9


def split_windows(ids: Sequence[int], body: int) -> list[list[int]]:
    """Cut token ids into consecutive windows of at most `body` tokens (at least one window)."""
    if body < 1:
        raise ValueError("window body must be at least one token")
    return [list(ids[i:i + body]) for i in range(0, len(ids), body)] or [[]]


def _special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a text ([CLS] and [SEP] for DeBERTa)."""
    plain = tokenizer("guard", add_special_tokens=False)["input_ids"]
    full = tokenizer("guard")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise ModelLoadError("The Prompt Guard tokenizer's special tokens could not be worked out.")


def pack(windows: list[list[int]], max_batch: int, max_tokens: int) -> list[list[list[int]]]:
    """Consecutive groups of windows, each within `max_batch` rows and `max_tokens` padded tokens
    (a window longer than the budget goes alone)."""
    groups: list[list[list[int]]] = []
    for window in windows:
        group = groups[-1] if groups else None
        if group and len(group) < max_batch and \
                (len(group) + 1) * max(len(window), *(len(w) for w in group)) <= max_tokens:
            group.append(window)
        else:
            groups.append([window])
    return groups


class PromptGuard:
    """A loaded Prompt Guard classifier. The malicious probability is softmax index 1."""

    # A tuned model's record (guard.engines.tuned_prompt_guard.TunedInfo); None for a base model.
    tuned: Any = None

    def __init__(self, model: Any, tokenizer: Any, *, name: str, revision: str | None = None,
                 window: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        limit = window or min(int(getattr(model.config, "max_position_embeddings", 512)),
                              int(getattr(tokenizer, "model_max_length", 512) or 512))
        self.window = min(limit, 512)
        self._prefix, self._suffix = _special_wrapping(tokenizer)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_id: str | Path, *, device: str | None = None, revision: str | None = None,
             token: str | None = None, plain: bool = False) -> PromptGuard:
        """A hub id, a folder, "86m"/"22m", or a folder made by `python -m guard.tune
        prompt-guard` (loaded on its recorded base; `plain` reads such a folder's own files)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from guard.engines.tuned_prompt_guard import is_tuned_folder, load_tuned

        if not plain and is_tuned_folder(model_id):
            return load_tuned(model_id, device=device)
        model_id = PROMPT_GUARD_MODELS.get(str(model_id).lower(), str(model_id))
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision, token=token)
            model = AutoModelForSequenceClassification.from_pretrained(
                model_id, revision=revision, token=token)
        except (OSError, ValueError, KeyError) as exc:
            raise _load_error(model_id, exc) from exc
        if model.config.num_labels != 2:
            raise ModelLoadError(f"{model_id} has {model.config.num_labels} labels; Prompt Guard 2 has 2.")
        model.to(pick_device(device)).eval()
        return cls(model, tokenizer, name=model_id, revision=revision)

    def describe(self) -> PromptGuardInfo:
        return PromptGuardInfo(self.name, str(self.model.device), self.window, self.revision)

    def score(self, text: str, *, preprocessing: str = "none") -> TextScore:
        return self.score_many([text], preprocessing=preprocessing)[0]

    @property
    def default_max_tokens(self) -> int:
        """Padded tokens per forward pass: every window at once on a GPU, 512 on a CPU.

        On a CPU, DeBERTa's relative-attention tensors for a batch of 512-token windows fall out
        of cache, and such a batch measured 1.2-1.5x slower than the same windows one by one
        (bench/bench_engine.py); short texts still share a pass. On a GPU the batch is the fast
        path.
        """
        return 32 * self.window if self.model.device.type == "cuda" else self.window

    def score_many(self, texts: Sequence[str], *, max_batch: int = 32,
                   max_tokens: int | None = None, preprocessing: str = "none") -> list[TextScore]:
        """Score texts; their windows run together, up to `max_batch` windows and `max_tokens`
        padded tokens per forward pass. A text over `limits.MAX_PROMPT_GUARD_CHARS` characters
        raises TooLarge before anything is tokenized. `preprocessing` is one of guard.core.prompt_guard_text.PREPROCESSING:
        "llamafirewall" scores each text as `collapse_spacing` leaves it."""
        preprocessing = check_preprocessing(preprocessing)
        for n, text in enumerate(texts, start=1):
            if len(text) > limits.MAX_PROMPT_GUARD_CHARS:
                which = f"Text {n} of {len(texts)}" if len(texts) > 1 else "The text"
                raise TooLarge(
                    f"{which} is {len(text):,} characters; Prompt Guard scores at most "
                    f"{limits.MAX_PROMPT_GUARD_CHARS:,} at a time. Shorten it, or score it in "
                    "parts.")
        started = time.perf_counter()
        scored = ([collapse_spacing(t, self.tokenizer) for t in texts]
                  if preprocessing == "llamafirewall" else list(texts))
        ids_per_text = self.tokenizer(scored, add_special_tokens=False, verbose=False)["input_ids"]
        body = self.window - len(self._prefix) - len(self._suffix)
        windows, owner = [], []
        for n, ids in enumerate(ids_per_text):
            for chunk in split_windows(ids, body):
                windows.append(self._prefix + chunk + self._suffix)
                owner.append(n)
        groups = pack(windows, max_batch, max_tokens or self.default_max_tokens)
        probs = self._forward(groups)
        seconds = (time.perf_counter() - started) / max(len(texts), 1)
        results = []
        for n, ids in enumerate(ids_per_text):
            scores = tuple(p for p, o in zip(probs, owner, strict=True) if o == n)
            best = max(range(len(scores)), key=scores.__getitem__)
            results.append(TextScore(scores[best], best, len(scores), scores, len(ids), seconds,
                                     preprocessing, scored[n] != texts[n]))
        return results

    def _forward(self, groups: list[list[list[int]]]) -> list[float]:
        pad = self.tokenizer.pad_token_id or 0
        out: list[float] = []
        with self._lock, torch.inference_mode():
            for n, group in enumerate(groups):
                if n:
                    limits.check_time(n, len(groups))
                width = max(len(w) for w in group)
                ids = torch.full((len(group), width), pad, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for row, window in enumerate(group):
                    ids[row, :len(window)] = torch.tensor(window)
                    mask[row, :len(window)] = 1
                logits = self.model(input_ids=ids.to(self.model.device),
                                    attention_mask=mask.to(self.model.device)).logits
                out.extend(logits.float().softmax(dim=-1)[:, 1].tolist())
        return out

    def score_conversation(self, conversation: Conversation, *, include_assistant: bool = False,
                           preprocessing: str = "none") -> list[MessageScore]:
        """Score each user message (and each assistant message when asked) on its own."""
        picked = [(i, t) for i, t in enumerate(conversation.turns)
                  if t.role == "user" or include_assistant]
        for i, t in picked:
            if len(t.text) > limits.MAX_PROMPT_GUARD_CHARS:
                raise TooLarge(
                    f"Message {i + 1} ({t.role}) is {len(t.text):,} characters; Prompt Guard "
                    f"scores at most {limits.MAX_PROMPT_GUARD_CHARS:,} at a time. Shorten it.")
        scores = self.score_many([t.text for _, t in picked], preprocessing=preprocessing)
        return [MessageScore(i, t.role, s) for (i, t), s in zip(picked, scores, strict=True)]
