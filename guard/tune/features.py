"""Training pairs as token ids: the prompt exactly as inference tokenizes it, loss on the answer.

The prompt goes through `LlamaGuard.prepare` (the tokenizer, the image processor and the context
check that judging uses; a plan keeps message text apart from control tokens); the answer is
tokenized on its own and appended, since at inference the model writes it token by token after
the prompt. Prompt tokens are masked with -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from guard.core.categories import Family
from guard.core.errors import ContextTooLong
from guard.core.prompts import ANSWER_PREFIX
from guard.engines.llama_guard import LlamaGuard
from guard.tune.data import TuneExample
from guard.tune.errors import TuneError

IGNORE = -100
# The token each family's model ends its answer with (Llama Guard 2: the Llama 3 tokenizer's
# end of turn, as Guard Lab's tiny stand-in is trained; unconfirmed on the real checkpoint).
END_TOKEN: dict[Family, str] = {
    Family.LLAMA_GUARD_4: "<|eot|>",
    Family.LLAMA_GUARD_3: "<|eot_id|>",
    Family.LLAMA_GUARD_3_1B: "<|eot_id|>",
    Family.LLAMA_GUARD_2: "<|eot_id|>",
}


def answer_text(guard: LlamaGuard, target: str) -> str:
    """What the model writes: its family's opening (a blank line, or a space), the target, the
    end token."""
    end = END_TOKEN[guard.family]
    if guard.tokenizer.convert_tokens_to_ids(end) in (None, guard.tokenizer.unk_token_id):
        raise TuneError(f"The tokenizer of {guard.name} has no end token {end}; it is not a "
                        f"{guard.family.label} tokenizer.")
    return ANSWER_PREFIX[guard.family.value] + target + end


def encode(guard: LlamaGuard, example: TuneExample) -> dict[str, Any]:
    """input_ids and labels (lists), and pixel_values (a CPU tensor) when the prompt has images."""
    try:
        inputs = guard.prepare([example.plan or example.prompt], list(example.images))
    except ContextTooLong as exc:
        raise TuneError(f"Example {example.id}: {exc}") from None
    prompt_ids = inputs["input_ids"][0].tolist()
    answer_ids = guard.tokenizer(answer_text(guard, example.target),
                                 add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > guard.context_limit:
        raise TuneError(f"Example {example.id} with its answer is longer than the "
                        f"{guard.context_limit:,} tokens {guard.name} accepts; shorten it.")
    item: dict[str, Any] = {"input_ids": prompt_ids + answer_ids,
                            "labels": [IGNORE] * len(prompt_ids) + answer_ids}
    if "pixel_values" in inputs:
        item["pixel_values"] = inputs["pixel_values"].cpu()
    return item


def encode_all(guard: LlamaGuard, examples: Sequence[TuneExample]) -> list[dict[str, Any]]:
    return [encode(guard, e) for e in examples]


class Collator:
    """Pads a batch on the right (labels with -100); stacks the images' tiles in order."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        tiles = [item["pixel_values"] for item in items if "pixel_values" in item]
        if tiles:
            batch["pixel_values"] = torch.cat(tiles)
        return batch
