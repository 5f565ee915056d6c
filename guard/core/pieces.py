"""Prompts as the engines tokenize them: the template's control tokens apart from the text.

A tokenizer given a whole prompt string reads any special-token text in it as the control token,
so a message saying `<|eot|><|header_start|>assistant<|header_end|>` could end the guard's
prompt and write its answer. Here each control token of the template becomes its id and the
text between them is tokenized with special-token parsing off. For text without such strings
the ids equal those of the whole string: tokenizers cut a string at its special tokens first
and tokenize the stretches between them on their own.
"""

from __future__ import annotations

import re
from typing import Any

from guard.core.errors import ModelLoadError
from guard.core.prompts import IMAGE_PLACEHOLDER, PromptPlan
from guard.core.verdict import SAFE_SPELLINGS, UNSAFE_SPELLINGS

# How a prompt is tokenized, piece by piece: a control token of the template ("special"),
# text in which special-token strings are plain text ("text"), or a prompt string given by the
# caller, trusted to mean its special tokens ("trusted").
Pieces = list[tuple[str, str]]


def decision_variants(tokenizer: Any, name: str) -> tuple[list[int], list[int]]:
    """The single-token spellings of 'safe' and 'unsafe' in `tokenizer` (with and without a
    leading space), or ModelLoadError when a word has none."""
    found = []
    for spellings in (SAFE_SPELLINGS, UNSAFE_SPELLINGS):
        ids: list[int] = []
        for spelling in spellings:
            encoded = tokenizer.encode(spelling, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
        if not ids:
            raise ModelLoadError(
                f"The tokenizer of {name} has no single token for '{spellings[0]}' (with or "
                "without a leading space); this is not a Llama Guard tokenizer.")
        found.append(ids)
    return found[0], found[1]


class PieceTokenizer:
    """Token ids of prompt pieces with a transformers tokenizer; thread-safe.

    Text pieces go through a private copy of the tokenizer's backend that never parses special
    tokens (`encode_special_tokens`), so no call can switch that off for another thread; the
    template's control tokens map to their ids. Harmless text gets exactly the ids that
    tokenizing the whole prompt string gives, since tokenizers split at special tokens first.
    """

    def __init__(self, tokenizer: Any, name: str) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = tokenizer
        self.name = name
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError(f"The tokenizer of {name} is not a fast (tokenizers) tokenizer, "
                                 "which Guard Lab needs to keep message text apart from control "
                                 "tokens. Load the checkpoint's tokenizer.json.")
        self._plain = Tokenizer.from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        specials = sorted((t.content for t in tokenizer.added_tokens_decoder.values() if t.special),
                          key=len, reverse=True)
        self._special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
        self._special_re = re.compile("|".join(map(re.escape, specials)) or "(?!)")

    def special_id(self, token: str) -> int:
        try:
            return self._special_ids[token]
        except KeyError:
            raise ModelLoadError(
                f"The tokenizer of {self.name} has no special token {token}: it does not belong "
                "to the family this prompt was written for. Check the model and --family.") from None

    def has_special_text(self, text: str) -> bool:
        return self._special_re.search(text) is not None

    def text_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._plain.encode_batch(texts, add_special_tokens=False)]

    def trusted_ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                              verbose=False)["input_ids"]

    def encode(self, pieces: list[Pieces],
               images: list[list[list[int]]] | None = None) -> list[list[int]]:
        """Ids of each prompt's pieces. `images[i]`, when given, holds the ids that stand for
        each image of prompt i, which replace its image placeholders in order."""
        by_kind: dict[str, list[str]] = {"text": [], "trusted": []}
        for prompt in pieces:
            for kind, text in prompt:
                if kind in by_kind:
                    by_kind[kind].append(text)
        encoded = {"text": iter(self.text_ids(by_kind["text"])),
                   "trusted": iter(self.trusted_ids(by_kind["trusted"]))}
        out = []
        for n, prompt in enumerate(pieces):
            own = iter(images[n]) if images is not None else None
            ids: list[int] = []
            for kind, text in prompt:
                if kind != "special":
                    ids.extend(next(encoded[kind]))
                elif text == IMAGE_PLACEHOLDER and own is not None:
                    ids.extend(next(own))
                else:
                    ids.append(self.special_id(text))
            out.append(ids)
        return out


def prompt_pieces(prompt: PromptPlan | str) -> Pieces:
    """A plan's pieces; a prompt string is trusted as it stands (only its image placeholders
    are cut out, to be expanded)."""
    if isinstance(prompt, PromptPlan):
        if prompt.pieces:
            return [("special" if p.special else "text", p.text) for p in prompt.pieces]
        prompt = prompt.prompt  # a plan made by hand, without pieces: its string, trusted
    pieces: Pieces = []
    for i, chunk in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
        if i:
            pieces.append(("special", IMAGE_PLACEHOLDER))
        if chunk:
            pieces.append(("trusted", chunk))
    return pieces
