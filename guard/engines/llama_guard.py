"""Llama Guard on transformers: one generation gives the answer and p_unsafe."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from guard.core import limits
from guard.core.categories import Family, categories_for, guess_family
from guard.core.conversation import Conversation
from guard.core.errors import ContextTooLong, InvalidConversation, ModelLoadError
from guard.core.pieces import Pieces, PieceTokenizer, decision_variants, prompt_pieces
from guard.core.prompts import IMAGE_PLACEHOLDER, CustomCategory, PromptPlan
from guard.core.verdict import (
    DEFAULT_THRESHOLD,
    Verdict,
    logsumexp,
    make_verdict,
    p_unsafe_from_logits,
)
from guard.engines.engine import Capabilities, EngineBase, ModelInfo
from guard.engines.quantize import check as check_quantize
from guard.engines.quantize import model_name, quantization_config

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


class _StopAtSafe:
    """A StoppingCriteria: a row is done once its answer, past the blank line, is 'safe'.

    Only the end of the answer can follow 'safe', so the row's text, verdict and p_unsafe are
    what the full generation gives; rows that answer 'unsafe' go on to write their codes.
    """

    def __init__(self, guard: LlamaGuard, prompt_len: int):
        self.guard, self.prompt_len = guard, prompt_len
        self.safe = set(guard.safe_ids)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = []
        for row in input_ids[:, self.prompt_len:].tolist():
            *before, last = row
            done.append(last in self.safe and all(self.guard.is_blank(t) for t in before))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class _Encoded:
    """Prompts tokenized but not padded: `ids[i]` of prompt i, `tiles[i]` its rows of
    `pixel_values` (the tiles of the distinct images), in order; `special_text[i]` whether a
    text of prompt i held the text of a special token (encoded as plain text)."""

    ids: list[list[int]]
    tiles: list[list[int]]
    pixel_values: torch.Tensor | None
    special_text: list[bool]


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
        # Every spelling of the decision words the tokenizer has: the model may write ' safe'
        # after a prompt that ends in a space (Llama Guard 2), 'safe' after a blank line.
        self.safe_ids, self.unsafe_ids = decision_variants(self.tokenizer, name)
        self.safe_id, self.unsafe_id = self.safe_ids[0], self.unsafe_ids[0]
        self.pieces = PieceTokenizer(self.tokenizer, name)
        generation = model.generation_config
        self.eos_ids = generation.eos_token_id
        # A row whose answer opens with 'safe' is complete: only the end token can follow, so
        # generation stops there instead of spending one more step on it (bench_engine.py).
        self.stop_at_safe = True
        self._blank: dict[int, bool] = {}  # token id -> decodes to whitespace only
        self.pad_id = generation.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.pad_token_id
            if self.pad_id is None:
                self.pad_id = self.eos_ids[0] if isinstance(self.eos_ids, list) else self.eos_ids

    @classmethod
    def load(cls, model_id: str | Path, *, family: Family | str | None = None,
             device: str | None = None, revision: str | None = None,
             token: str | None = None, quantize: str = "none") -> LlamaGuard:
        """Load from a hub id or a local folder. `token=None` lets huggingface_hub read HF_TOKEN.

        `quantize` (`guard.engines.quantize.QUANTIZE`) quantizes the decoder's linear layers as
        they load; an option this machine cannot run is refused before any weight is read, and
        the name says it (`<model_id> (int8)`)."""
        from transformers import AutoConfig, AutoProcessor, AutoTokenizer

        target = pick_device(device)
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        check_quantize(quantize, target)
        kwargs = {"revision": revision, "token": token}
        weights: dict[str, Any] = {"dtype": dtype}
        if quantize != "none":
            # Quantized where it runs: the full-precision weights never all sit in memory.
            weights.update(quantization_config=quantization_config(quantize, dtype),
                           device_map={"": str(target)})
        try:
            config = AutoConfig.from_pretrained(str(model_id), **kwargs)
            if config.model_type == "llama4":
                from transformers import Llama4ForConditionalGeneration

                processor = AutoProcessor.from_pretrained(str(model_id), **kwargs)
                model = Llama4ForConditionalGeneration.from_pretrained(
                    str(model_id), **weights, **kwargs)
                family = Family(family or Family.LLAMA_GUARD_4)
            else:
                from transformers import AutoModelForCausalLM

                processor = AutoTokenizer.from_pretrained(str(model_id), **kwargs)
                model = AutoModelForCausalLM.from_pretrained(str(model_id), **weights, **kwargs)
                family = Family(family or guess_family(str(model_id)))
        except (OSError, ValueError, KeyError) as exc:
            raise _load_error(str(model_id), exc) from exc
        if quantize == "none":  # a quantized model was placed by its device_map
            model.to(target)
        model.eval()
        return cls(model, processor, family=family, name=model_name(str(model_id), quantize),
                   revision=revision)

    @property
    def capabilities(self) -> Capabilities:
        """Everything: images with Llama Guard 4, the logits, padded batches, LoRA adapters."""
        return Capabilities(images=self.family is Family.LLAMA_GUARD_4, category_scores=True,
                            batching=True, adapters=True)

    def describe(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family.value, device=str(self.model.device),
                         dtype=str(self.model.dtype).removeprefix("torch."), revision=self.revision,
                         context_limit=self.context_limit,
                         multimodal=self.capabilities.images, capabilities=self.capabilities)

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
        encoded = self._tokenize(plans, images)
        share = (time.perf_counter() - started) / max(len(plans), 1)
        groups = pack_by_budget([len(ids) for ids in encoded.ids],
                                limits.TOKEN_BUDGET if token_budget is None else token_budget,
                                max_rows=batch_size,
                                extra=MAX_NEW_TOKENS)
        verdicts: list[Verdict] = []
        for n, rows in enumerate(groups):
            if n:
                limits.check_time(n, len(groups))
            chunk = [(plans[r], conversations[r], encoded.special_text[r]) for r in rows]
            verdicts.extend(self._run(chunk, self._batch(encoded, rows), threshold, share))
        return verdicts

    def _tokenize(self, prompts: Sequence[PromptPlan | str], images: list[list[Any]]) -> _Encoded:
        """Token ids of each prompt, unpadded, each checked against the context; `images[i]`
        are the images of prompt i, in order.

        For images, the tiles of each distinct image object are made once: sweeps and
        attributions repeat the same images many times, and `tiles[i]` names the rows of
        `pixel_values` that prompt i refers to, in order.
        """
        pieces = [prompt_pieces(p) for p in prompts]
        special_text = [any(kind == "text" and self.pieces.has_special_text(text)
                            for kind, text in prompt) for prompt in pieces]
        flat = [image for per_prompt in images for image in per_prompt]
        if self.family is not Family.LLAMA_GUARD_4 or not flat:
            return _Encoded(self._token_ids(pieces), [[] for _ in prompts], None, special_text)
        placeholders = [sum(1 for kind, text in prompt if kind == "special"
                            and text == IMAGE_PLACEHOLDER) for prompt in pieces]
        if any(n != len(own) for n, own in zip(placeholders, images, strict=True)):
            raise InvalidConversation(
                f"A prompt holds the text {IMAGE_PLACEHOLDER} where no image goes. Pass the "
                "prompt as a plan (guard.core.prompts.plan), or remove the text.")
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
        # The processor's expansion of each image (image start, patches, tile separators, image
        # end) is its own control-token text: tokenized as such, once per distinct image.
        expansions = self.pieces.trusted_ids(
            [self.processor.replace_image_token(processed, image_idx=i)
             for i in range(len(distinct))])
        expand = [[expansions[slot[id(image)]] for image in own] for own in images]
        tiles = [[t for image in own for t in spans[slot[id(image)]]] for own in images]
        return _Encoded(self._token_ids(pieces, expand), tiles, processed["pixel_values"],
                        special_text)

    def _token_ids(self, pieces: list[Pieces],
                   images: list[list[list[int]]] | None = None) -> list[list[int]]:
        """Unpadded ids, refusing any prompt over the context. The longest prompt goes first
        and alone: when it does not fit (a sweep of an over-long conversation, say), the others
        are never tokenized."""
        if not pieces:
            return []
        prompts = [(p, None if images is None else images[i]) for i, p in enumerate(pieces)]
        longest = max(range(len(pieces)), key=lambda i: sum(len(t) for _, t in pieces[i]))
        first = self._ids([prompts[longest]])[0]
        self._check_fits(len(first))
        rest = self._ids(prompts[:longest] + prompts[longest + 1:])
        for ids in rest:
            self._check_fits(len(ids))
        return rest[:longest] + [first] + rest[longest:]

    def _ids(self, prompts: list[tuple[Pieces, list[list[int]] | None]]) -> list[list[int]]:
        """One tokenizer pass over some prompts: (pieces, ids of each image) each."""
        if not prompts:
            return []
        with_images = [own for _, own in prompts]
        return self.pieces.encode([p for p, _ in prompts],
                                  None if all(own is None for own in with_images)
                                  else [own or [] for own in with_images])

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

    def _encode(self, prompts: Sequence[PromptPlan | str],
                images: list[Any]) -> dict[str, torch.Tensor]:
        """One padded batch of all `prompts`; `images` are theirs, in prompt order."""
        if self.family is Family.LLAMA_GUARD_4 and images:
            counts = [sum(1 for kind, text in prompt_pieces(p)
                          if kind == "special" and text == IMAGE_PLACEHOLDER) for p in prompts]
            if sum(counts) != len(images):
                raise InvalidConversation(
                    f"The prompts hold {sum(counts)} image placeholders for {len(images)} "
                    "images. Pass each prompt with its own images.")
            order = iter(images)
            per_prompt = [[next(order) for _ in range(n)] for n in counts]
        else:
            per_prompt = [[] for _ in prompts]
        return self._batch(self._tokenize(prompts, per_prompt), range(len(prompts)))

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {k: v.to(self.model.device) for k, v in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def prepare(self, prompts: Sequence[PromptPlan | str],
                images: list[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for rendered prompts, on the model's device and in its dtype; a prompt
        over the context raises ContextTooLong first.

        Pass plans (`guard.core.prompts.plan`) for prompts that hold a person's text: a prompt string
        is tokenized as it stands, its special-token text read as special tokens."""
        inputs = self._to_device(self._encode(prompts, images))
        if "tile_index" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"][inputs.pop("tile_index")]
        return inputs

    def _run(self, chunk: list[tuple[PromptPlan, Conversation, bool]],
             batch: dict[str, torch.Tensor], threshold: float, share: float) -> list[Verdict]:
        started = time.perf_counter()
        inputs = self._to_device(batch)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        with self._lock, torch.inference_mode():
            if "pixel_values" in inputs:
                inputs["mm_encoder_outputs"] = self._encode_images(
                    inputs.pop("pixel_values"), inputs.pop("tile_index"))
            from transformers import StoppingCriteriaList

            stop = StoppingCriteriaList(
                [_StopAtSafe(self, inputs["input_ids"].shape[1])] if self.stop_at_safe else [])
            out = self.model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_logits=True,
                return_dict_in_generate=True, pad_token_id=self.pad_id, eos_token_id=self.eos_ids,
                stopping_criteria=stop)
        seconds = (time.perf_counter() - started) / len(chunk) + share
        prompt_len = inputs["input_ids"].shape[1]
        generated = out.sequences[:, prompt_len:].cpu()
        # Raw logits of every step, stacked: (steps, batch, vocab) -> the decision columns kept.
        columns = self.safe_ids + self.unsafe_ids
        kept = torch.stack([step[:, columns].float().cpu() for step in out.logits])
        n_safe = len(self.safe_ids)
        table = categories_for(self.family)
        verdicts = []
        for row, ((prompt_plan, conversation, special_text), length) in enumerate(
                zip(chunk, lengths, strict=True)):
            tokens = generated[row].tolist()
            step = self._decision_step(tokens)
            logits = kept[step, row].tolist()
            # Each word's spellings together: p_unsafe = P(unsafe) / (P(safe) + P(unsafe)).
            safe_logit, unsafe_logit = logsumexp(logits[:n_safe]), logsumexp(logits[n_safe:])
            text = self.tokenizer.decode(self._trim(tokens), skip_special_tokens=True)
            verdicts.append(make_verdict(
                text, p_unsafe_from_logits(safe_logit, unsafe_logit), prompt_plan.categories,
                table, threshold=threshold, prompt_tokens=int(length),
                images=len(conversation.images), seconds=seconds, model=self.name,
                family=self.family.value, special_token_text=special_text))
        return verdicts

    def _encode_images(self, pixel_values: torch.Tensor, tile_index: torch.Tensor) -> dict[str, Any]:
        """Run the vision tower once per distinct tile, then lay the features out in prompt order.

        Every tile is encoded on its own, so encoding the distinct ones and gathering is exact.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = self.model.get_image_features(pixel_values=pixel_values, return_dict=True)
        return {"image": BaseModelOutputWithPooling(
            last_hidden_state=features.last_hidden_state[tile_index])}

    def is_blank(self, token: int) -> bool:
        """Whether a token decodes to whitespace only (the answer's leading blank line)."""
        if token not in self._blank:
            self._blank[token] = not self.tokenizer.decode([token]).strip()
        return self._blank[token]

    def _trim(self, tokens: list[int]) -> list[int]:
        eos = set(self.eos_ids if isinstance(self.eos_ids, list) else [self.eos_ids])
        for i, token in enumerate(tokens):
            if token in eos or token == self.pad_id:
                return tokens[:i]
        return tokens

    def _decision_step(self, tokens: list[int]) -> int:
        """The step where 'safe' or 'unsafe' was generated, in any spelling (after the leading
        blank line, or the space)."""
        decision = {*self.safe_ids, *self.unsafe_ids}
        for i, token in enumerate(self._trim(tokens)):
            if token in decision:
                return i
        # The model said something else: score the first step that was not whitespace.
        for i, token in enumerate(self._trim(tokens)):
            if self.tokenizer.decode([token]).strip():
                return i
        return 0
