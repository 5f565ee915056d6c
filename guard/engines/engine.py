"""The seam every Llama Guard engine stands behind (transformers, llama.cpp, remote servers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable

from guard.core.categories import Family
from guard.core.conversation import Conversation
from guard.core.prompts import CustomCategory, PromptPlan, plan
from guard.core.verdict import DEFAULT_THRESHOLD, Verdict


@dataclass(frozen=True)
class Capabilities:
    """What an engine, with its model family, can do beyond judging text: the one thing the app
    and the CLIs ask, instead of testing engine names or attributes."""

    images: bool = False  # judges conversations with images (the engine and the family)
    category_scores: bool = False  # per-category probabilities from logits (guard.explore)
    batching: bool = False  # classify_batch judges several conversations at once, not in turn
    adapters: bool = False  # serves a LoRA adapter of guard.tune (guard.engines.adapter)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Capabilities:
        return cls(**{f.name: bool(data[f.name]) for f in fields(cls) if f.name in data})


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
    capabilities: Capabilities = Capabilities()  # an older record says nothing: none claimed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        """The info `to_json` wrote (or a record from before `capabilities`)."""
        known = {f.name for f in fields(cls)} - {"capabilities"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   capabilities=Capabilities.from_json(data.get("capabilities") or {}))


@runtime_checkable
class Engine(Protocol):
    """Classify one conversation, classify a batch, describe the model."""

    name: str
    capabilities: Capabilities

    def plan(self, conversation: Conversation, excluded: Iterable[str] = (),
             custom: Sequence[CustomCategory] = ()) -> PromptPlan: ...

    def classify(self, conversation: Conversation, excluded: Iterable[str] = (), *,
                 threshold: float = ..., custom: Sequence[CustomCategory] = ()) -> Verdict: ...

    def classify_batch(self, conversations: Sequence[Conversation], excluded: Iterable[str] = (), *,
                       threshold: float = ..., custom: Sequence[CustomCategory] = (),
                       batch_size: int | None = ...,
                       excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]: ...

    def describe(self) -> ModelInfo: ...


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
