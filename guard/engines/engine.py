"""The seam every Llama Guard engine stands behind (transformers today; llama.cpp, remote later)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from guard.core.categories import Family
from guard.core.conversation import Conversation
from guard.core.prompts import CustomCategory, PromptPlan, plan
from guard.core.verdict import DEFAULT_THRESHOLD, Verdict


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
                       batch_size: int | None = ...,
                       excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]: ...

    def describe(self) -> Any: ...


class EngineBase:
    """What every engine shares: the project's renderer for its family, one classify via a batch."""

    family: Family

    def plan(self, conversation: Conversation, excluded: Iterable[str] = (),
             custom: Sequence[CustomCategory] = ()) -> PromptPlan:
        return plan(conversation, excluded, self.family, custom)

    def plans(self, conversations: Sequence[Conversation], excluded: Iterable[str],
              custom: Sequence[CustomCategory],
              excluded_per_item: Sequence[Iterable[str]] | None) -> list[PromptPlan]:
        """One plan per conversation; `excluded_per_item`, when given, overrides `excluded`."""
        excluded = tuple(excluded)
        return [self.plan(c, excluded_per_item[i] if excluded_per_item is not None else excluded,
                          custom)
                for i, c in enumerate(conversations)]

    def classify(self, conversation: Conversation, excluded: Iterable[str] = (), *,
                 threshold: float = DEFAULT_THRESHOLD,
                 custom: Sequence[CustomCategory] = ()) -> Verdict:
        """Judge the last message of `conversation`."""
        return self.classify_batch([conversation], excluded, threshold=threshold, custom=custom)[0]

    def classify_batch(self, conversations: Sequence[Conversation], excluded: Iterable[str] = (), *,
                       threshold: float = DEFAULT_THRESHOLD, custom: Sequence[CustomCategory] = (),
                       batch_size: int | None = None,
                       excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]:
        """`batch_size`: the most conversations judged together; None lets the engine choose."""
        raise NotImplementedError
