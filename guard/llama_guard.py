"""Llama Guard on transformers: one generation gives the answer and p_unsafe."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from .categories import Family, categories_for, guess_family
from .conversation import Conversation
from .engine import EngineBase, ModelInfo
from .errors import ContextTooLong, InvalidConversation, ModelLoadError
from .prompts import CustomCategory, PromptPlan
from .verdict import DEFAULT_THRESHOLD, Verdict, make_verdict, p_unsafe_from_logits

# With the checkpoint's null chunk size patched to this, masks equal plain causal masks only
# up to this length; longer prompts would be judged under attention the model never saw.
PATCHED_CHUNK_SIZE = 8192
MAX_NEW_TOKENS = 40


def pick_device(device: str | None = None) -> torch.device:
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
                       batch_size: int = 8, excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]:
        """Judge many conversations, `batch_size` at a time, padded on the left."""
        plans = self.plans(conversations, excluded, custom, excluded_per_item)
        verdicts: list[Verdict] = []
        for start in range(0, len(plans), batch_size):
            chunk = list(zip(plans[start:start + batch_size],
                             conversations[start:start + batch_size], strict=True))
            verdicts.extend(self._run(chunk, threshold))
        return verdicts

    def _encode(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Token ids for the prompts; for images, the tiles of each distinct image once.

        Sweeps and attributions repeat the same image objects many times: each distinct image
        is preprocessed once, and `tile_index` maps every tile the prompts refer to, in order,
        to its row of `pixel_values`.
        """
        if self.family is not Family.LLAMA_GUARD_4 or not images:
            return dict(self.tokenizer(prompts, return_tensors="pt", padding=True,
                                       padding_side="left", add_special_tokens=False))
        placeholder = self.processor.fake_image_token
        if sum(p.count(placeholder) for p in prompts) != len(images):
            raise InvalidConversation(
                f"A message contains the text {placeholder}, which Llama Guard 4 reserves for "
                "images. Remove it from the message.")
        slot: dict[int, int] = {}  # id of an image object -> its place among the distinct ones
        distinct = []
        for image in images:
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
        order = iter(slot[id(image)] for image in images)
        texts, tile_index = [], []
        for prompt in prompts:
            pieces = prompt.split(placeholder)
            text = pieces[0]
            for piece in pieces[1:]:
                which = next(order)
                text += expansions[which] + piece
                tile_index.extend(spans[which])
            texts.append(text)
        batch = dict(self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                    add_special_tokens=False))
        batch["pixel_values"] = processed["pixel_values"]
        batch["tile_index"] = torch.tensor(tile_index, dtype=torch.long)
        return batch

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {k: v.to(self.model.device) for k, v in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for rendered prompts, on the model's device and in its dtype."""
        inputs = self._to_device(self._encode(prompts, images))
        if "tile_index" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"][inputs.pop("tile_index")]
        return inputs

    def _run(self, chunk: list[tuple[PromptPlan, Conversation]], threshold: float) -> list[Verdict]:
        started = time.perf_counter()
        images = [image for _, conversation in chunk for image in conversation.images]
        inputs = self._to_device(self._encode([p.prompt for p, _ in chunk], images))
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        for _, length in zip(chunk, lengths, strict=True):
            if length > self.context_limit:
                raise ContextTooLong(
                    f"The prompt is {length:,} tokens; {self.name} accepts at most "
                    f"{self.context_limit:,} here. Shorten the conversation or remove images.")
        with self._lock, torch.inference_mode():
            if "pixel_values" in inputs:
                inputs["mm_encoder_outputs"] = self._encode_images(
                    inputs.pop("pixel_values"), inputs.pop("tile_index"))
            out = self.model.generate(
                **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_logits=True,
                return_dict_in_generate=True, pad_token_id=self.pad_id, eos_token_id=self.eos_ids)
        seconds = (time.perf_counter() - started) / len(chunk)
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
