"""Llama Guard on transformers: one generation gives the answer and p_unsafe."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import limits
from .categories import Family, categories_for, guess_family
from .conversation import Conversation
from .engine import EngineBase, ModelInfo
from .errors import ContextTooLong, InvalidConversation, ModelLoadError
from .prompts import IMAGE_PLACEHOLDER, CustomCategory, PromptPlan
from .verdict import DEFAULT_THRESHOLD, Verdict, make_verdict, p_unsafe_from_logits

# With the checkpoint's null chunk size patched to this, masks equal plain causal masks only
# up to this length; longer prompts would be judged under attention the model never saw.
PATCHED_CHUNK_SIZE = 8192
MAX_NEW_TOKENS = 40


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pack_by_budget(lengths: Sequence[int], budget: int, *, max_rows: int | None = None,
                   extra: int = 0) -> list[range]:
    """Consecutive groups of prompts, one forward pass each: a group's rows times its longest
    prompt plus `extra` (the tokens it may generate) stay within `budget`, and its rows within
    `max_rows` when given. A prompt over the budget on its own goes alone."""
    if budget < 1:
        raise ValueError(f"the token budget must be 1 or more, got {budget}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"the batch size must be 1 or more, got {max_rows}")
    groups: list[range] = []
    start, longest = 0, 0
    for i, length in enumerate(lengths):
        rows, wider = i - start + 1, max(longest, length)
        if i > start and (rows * (wider + extra) > budget
                          or (max_rows is not None and rows > max_rows)):
            groups.append(range(start, i))
            start, longest = i, length
        else:
            longest = wider
    if lengths:
        groups.append(range(start, len(lengths)))
    return groups


@dataclass(frozen=True)
class _Encoded:
    """Prompts tokenized but not padded: `ids[i]` of prompt i, `tiles[i]` its rows of
    `pixel_values` (the tiles of the distinct images), in order."""

    ids: list[list[int]]
    tiles: list[list[int]]
    pixel_values: torch.Tensor | None


def _load_error(model_id: str, exc: Exception) -> ModelLoadError:
    text = f"{type(exc).__name__}: {exc}"
    if "gated" in text.lower() or "401" in text or "403" in text:
        hint = ("the repository is gated: accept its licence on huggingface.co and set HF_TOKEN "
                "to a token of that account")
    elif Path(model_id).exists():
        hint = "the folder exists but does not hold a complete checkpoint (config, weights, processor)"
    else:
        hint = ("check the model id, the network, and HF_TOKEN; or pass a local folder; or run "
                "with --tiny for the offline test models")
    return ModelLoadError(f"Could not load {model_id}: {hint}. ({text.splitlines()[0][:300]})")


class LlamaGuard(EngineBase):
    """A loaded Llama Guard model. Load once, share between threads; calls are serialised."""

    def __init__(self, model: Any, processor: Any, *, family: Family, name: str,
                 revision: str | None = None) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.family = family
        self.name = name
        self.revision = revision
        self._lock = threading.Lock()
        text_config = getattr(model.config, "text_config", model.config)
        self.context_limit = int(getattr(text_config, "max_position_embeddings", 8192))
        if getattr(text_config, "attention_chunk_size", 0) is None:
            text_config.attention_chunk_size = PATCHED_CHUNK_SIZE
            self.context_limit = min(self.context_limit, PATCHED_CHUNK_SIZE)
        self.safe_id = self._single_token("safe")
        self.unsafe_id = self._single_token("unsafe")
        generation = model.generation_config
        self.eos_ids = generation.eos_token_id
        self.pad_id = generation.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id
            if self.pad_id is None:
                self.pad_id = self.eos_ids[0] if isinstance(self.eos_ids, list) else self.eos_ids

    @classmethod
    def load(cls, model_id: str | Path, *, family: Family | str | None = None,
             device: str | None = None, revision: str | None = None,
             token: str | None = None) -> LlamaGuard:
        """Load from a hub id or a local folder. `token=None` lets huggingface_hub read HF_TOKEN."""
        from transformers import AutoConfig, AutoProcessor, AutoTokenizer

        target = pick_device(device)
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        kwargs = {"revision": revision, "token": token}
        try:
            config = AutoConfig.from_pretrained(str(model_id), **kwargs)
            if config.model_type == "llama4":
                from transformers import Llama4ForConditionalGeneration

                processor = AutoProcessor.from_pretrained(str(model_id), **kwargs)
                model = Llama4ForConditionalGeneration.from_pretrained(
                    str(model_id), dtype=dtype, **kwargs)
                family = Family(family or Family.LLAMA_GUARD_4)
            else:
                from transformers import AutoModelForCausalLM

                processor = AutoTokenizer.from_pretrained(str(model_id), **kwargs)
                model = AutoModelForCausalLM.from_pretrained(str(model_id), dtype=dtype, **kwargs)
                family = Family(family or guess_family(str(model_id)))
        except (OSError, ValueError, KeyError) as exc:
            raise _load_error(str(model_id), exc) from exc
        model.to(target).eval()
        return cls(model, processor, family=family, name=str(model_id), revision=revision)

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ModelLoadError(
                f"The tokenizer of {self.name} splits '{word}' into {len(ids)} tokens; this is not "
                "a Llama Guard tokenizer.")
        return ids[0]

    def describe(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family.value, device=str(self.model.device),
                         dtype=str(self.model.dtype).removeprefix("torch."), revision=self.revision,
                         context_limit=self.context_limit,
                         multimodal=self.family is Family.LLAMA_GUARD_4)

    def classify_batch(self, conversations: Sequence[Conversation], excluded: Iterable[str] = (), *,
                       threshold: float = DEFAULT_THRESHOLD, custom: Sequence[CustomCategory] = (),
                       batch_size: int | None = None,
                       excluded_per_item: Sequence[Iterable[str]] | None = None,
                       token_budget: int | None = None) -> list[Verdict]:
        """Judge many conversations, padded on the left, in order.

        Every prompt is tokenized and checked against the context first: one that does not fit
        raises ContextTooLong before any batch is built. Then consecutive prompts share a
        forward pass while the padded tokens, generation included, stay within `token_budget`
        (`limits.TOKEN_BUDGET` when None) and the rows within `batch_size` (no cap when None).
        """
        plans = self.plans(conversations, excluded, custom, excluded_per_item)
        started = time.perf_counter()
        images = [list(c.images) for c in conversations]
        encoded = self._tokenize([p.prompt for p in plans], images)
        share = (time.perf_counter() - started) / max(len(plans), 1)
        groups = pack_by_budget([len(ids) for ids in encoded.ids],
                                limits.TOKEN_BUDGET if token_budget is None else token_budget,
                                max_rows=batch_size,
                                extra=MAX_NEW_TOKENS)
        verdicts: list[Verdict] = []
        for n, rows in enumerate(groups):
            if n:
                limits.check_time(n, len(groups))
            chunk = [(plans[r], conversations[r]) for r in rows]
            verdicts.extend(self._run(chunk, self._batch(encoded, rows), threshold, share))
        return verdicts

    def _tokenize(self, prompts: list[str], images: list[list[Any]]) -> _Encoded:
        """Token ids of each prompt, unpadded, each checked against the context; `images[i]`
        are the images of prompt i, in order.

        For images, the tiles of each distinct image object are made once: sweeps and
        attributions repeat the same images many times, and `tiles[i]` names the rows of
        `pixel_values` that prompt i refers to, in order.
        """
        flat = [image for per_prompt in images for image in per_prompt]
        if self.family is not Family.LLAMA_GUARD_4 or not flat:
            return _Encoded(self._token_ids(prompts), [[] for _ in prompts], None)
        placeholder = self.processor.fake_image_token
        if any(p.count(placeholder) != len(i) for p, i in zip(prompts, images, strict=True)):
            raise InvalidConversation(
                f"A message contains the text {placeholder}, which Llama Guard 4 reserves for "
                "images. Remove it from the message.")
        slot: dict[int, int] = {}  # id of an image object -> its place among the distinct ones
        distinct = []
        for image in flat:
            if id(image) not in slot:
                slot[id(image)] = len(distinct)
                distinct.append(image)
        processed = self.processor.image_processor(distinct, return_tensors="pt")
        spans, start = [], 0
        for h, w in processed["aspect_ratios"].tolist():
            count = h * w + (1 if h * w > 1 else 0)  # the tiles, plus a global view when split
            spans.append(range(start, start + count))
            start += count
        expansions = [self.processor.replace_image_token(processed, image_idx=i)
                      for i in range(len(distinct))]
        texts, tiles = [], []
        for prompt, own in zip(prompts, images, strict=True):
            pieces = prompt.split(placeholder)
            text, used = pieces[0], []
            for piece, image in zip(pieces[1:], own, strict=True):
                text += expansions[slot[id(image)]] + piece
                used.extend(spans[slot[id(image)]])
            texts.append(text)
            tiles.append(used)
        return _Encoded(self._token_ids(texts), tiles, processed["pixel_values"])

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Unpadded ids, refusing any text over the context. The longest text goes first and
        alone: when it does not fit (a sweep of an over-long conversation, say), the others are
        never tokenized."""
        if not texts:
            return []
        longest = max(range(len(texts)), key=lambda i: len(texts[i]))
        first = self._ids([texts[longest]])[0]
        self._check_fits(len(first))
        rest = self._ids(texts[:longest] + texts[longest + 1:])
        for ids in rest:
            self._check_fits(len(ids))
        return rest[:longest] + [first] + rest[longest:]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                              verbose=False)["input_ids"]

    def _check_fits(self, length: int) -> None:
        if length > self.context_limit:
            raise ContextTooLong(
                f"The prompt is {length:,} tokens; {self.name} accepts at most "
                f"{self.context_limit:,} here. Shorten the conversation or remove images.")

    def _batch(self, encoded: _Encoded, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """The padded tensors of some prompts; pixel values only for the tiles they use."""
        width = max(len(encoded.ids[r]) for r in rows)
        pad = self.tokenizer.pad_token_id
        pad = self.pad_id if pad is None else pad
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, r in enumerate(rows):
            ids = encoded.ids[r]
            if ids:
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        used = [t for r in rows for t in encoded.tiles[r]]
        if encoded.pixel_values is not None and used:
            distinct, tile_index = torch.unique(torch.tensor(used, dtype=torch.long),
                                                return_inverse=True)
            batch["pixel_values"] = encoded.pixel_values[distinct]
            batch["tile_index"] = tile_index
        return batch

    def _encode(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """One padded batch of all `prompts`; `images` are theirs, in prompt order."""
        placeholder = getattr(self.processor, "fake_image_token", IMAGE_PLACEHOLDER)
        if self.family is Family.LLAMA_GUARD_4 and images:
            if sum(p.count(placeholder) for p in prompts) != len(images):
                raise InvalidConversation(
                    f"A message contains the text {placeholder}, which Llama Guard 4 reserves "
                    "for images. Remove it from the message.")
            order = iter(images)
            per_prompt = [[next(order) for _ in range(p.count(placeholder))] for p in prompts]
        else:
            per_prompt = [[] for _ in prompts]
        return self._batch(self._tokenize(prompts, per_prompt), range(len(prompts)))

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {k: v.to(self.model.device) for k, v in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for rendered prompts, on the model's device and in its dtype; a prompt
        over the context raises ContextTooLong first."""
        inputs = self._to_device(self._encode(prompts, images))
        if "tile_index" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"][inputs.pop("tile_index")]
        return inputs

    def _run(self, chunk: list[tuple[PromptPlan, Conversation]], batch: dict[str, torch.Tensor],
             threshold: float, share: float) -> list[Verdict]:
        started = time.perf_counter()
        inputs = self._to_device(batch)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        with self._lock, torch.inference_mode():
            if "pixel_values" in inputs:
                inputs["mm_encoder_outputs"] = self._encode_images(
                    inputs.pop("pixel_values"), inputs.pop("tile_index"))
            out = self.model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_logits=True,
                return_dict_in_generate=True, pad_token_id=self.pad_id, eos_token_id=self.eos_ids)
        seconds = (time.perf_counter() - started) / len(chunk) + share
        prompt_len = inputs["input_ids"].shape[1]
        generated = out.sequences[:, prompt_len:].cpu()
        # Raw logits of every step, stacked: (steps, batch, vocab) -> two columns kept.
        pair = torch.stack([step[:, [self.safe_id, self.unsafe_id]].float().cpu()
                            for step in out.logits])
        table = categories_for(self.family)
        verdicts = []
        for row, ((prompt_plan, conversation), length) in enumerate(zip(chunk, lengths, strict=True)):
            tokens = generated[row].tolist()
            step = self._decision_step(tokens)
            safe_logit, unsafe_logit = pair[step, row].tolist()
            text = self.tokenizer.decode(self._trim(tokens), skip_special_tokens=True)
            verdicts.append(make_verdict(
                text, p_unsafe_from_logits(safe_logit, unsafe_logit), prompt_plan.categories,
                table, threshold=threshold, prompt_tokens=int(length),
                images=len(conversation.images), seconds=seconds, model=self.name,
                family=self.family.value))
        return verdicts

    def _encode_images(self, pixel_values: torch.Tensor, tile_index: torch.Tensor) -> dict[str, Any]:
        """Run the vision tower once per distinct tile, then lay the features out in prompt order.

        Every tile is encoded on its own, so encoding the distinct ones and gathering is exact.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = self.model.get_image_features(pixel_values=pixel_values, return_dict=True)
        return {"image": BaseModelOutputWithPooling(
            last_hidden_state=features.last_hidden_state[tile_index])}

    def _trim(self, tokens: list[int]) -> list[int]:
        eos = set(self.eos_ids if isinstance(self.eos_ids, list) else [self.eos_ids])
        for i, token in enumerate(tokens):
            if token in eos or token == self.pad_id:
                return tokens[:i]
        return tokens

    def _decision_step(self, tokens: list[int]) -> int:
        """The step where 'safe' or 'unsafe' was generated (after the leading blank line)."""
        for i, token in enumerate(self._trim(tokens)):
            if token in (self.safe_id, self.unsafe_id):
                return i
        # The model said something else: score the first step that was not whitespace.
        for i, token in enumerate(self._trim(tokens)):
            if self.tokenizer.decode([token]).strip():
                return i
        return 0
