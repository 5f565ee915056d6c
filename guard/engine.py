"""The seam every Llama Guard engine stands behind (transformers today; llama.cpp, remote later)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .conversation import Conversation
from .prompts import CustomCategory, PromptPlan
from .verdict import Verdict


@dataclass(frozen=True)
class ModelInfo:
    """What a runner says about itself, for the UI, the API and saved examples."""

    name: str
    family: str
    device: str
    dtype: str
    revision: str | None
    context_limit: int
    multimodal: bool
    engine: str = "transformers"


@runtime_checkable
class Engine(Protocol):
    """Classify one conversation, classify a batch, describe the model."""

    name: str

    def plan(self, conversation: Conversation, excluded: Iterable[str] = (),
             custom: Sequence[CustomCategory] = ()) -> PromptPlan: ...

    def classify(self, conversation: Conversation, excluded: Iterable[str] = (), *,
                 threshold: float = ..., custom: Sequence[CustomCategory] = ()) -> Verdict: ...

    def classify_batch(self, conversations: Sequence[Conversation], excluded: Iterable[str] = (), *,
                       threshold: float = ..., custom: Sequence[CustomCategory] = (),
                       batch_size: int = ..., excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]: ...

    def describe(self) -> Any: ...
