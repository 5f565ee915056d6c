"""The values that go in and out of the store: frozen dataclasses, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guard.core.conversation import Conversation
from guard.core.prompts import CustomCategory
from guard.core.verdict import Verdict

SAFE = "safe"
UNSAFE = "unsafe"
LABEL_VALUES = (SAFE, UNSAFE)
# What `import labels` offers of this module: every record type.
__all__ = ["ExampleFilter", "ExampleInput", "ExampleSummary", "ImageBlob", "ImportResult",
           "LabelEvent", "LabelInput", "MetricInputs", "ModelOutput", "SavedExample",
           "StoredExample", "StoredLabel"]


@dataclass(frozen=True)
class ImageBlob:
    """An image as stored: normalised RGB, PNG-encoded, named by the SHA-256 of those bytes."""

    sha256: str
    png: bytes
    width: int
    height: int


@dataclass(frozen=True)
class ModelOutput:
    """What Llama Guard (and optionally Prompt Guard) said about one example."""

    model: str
    raw_output: str
    unsafe: bool  # the verdict after the threshold
    p_unsafe: float
    threshold: float
    categories: tuple[str, ...] = ()
    model_label: str = ""  # what the generated text said: "safe", "unsafe" or ""
    revision: str = ""
    prompt_guard_model: str = ""
    prompt_guard_revision: str = ""
    prompt_guard_scores: dict[str, float] = field(default_factory=dict)
    judged: bool = True  # False: the model gave no answer (failed, or never asked)
    policy: str = ""  # name@version of the policy whose decision `unsafe` is; "" for none

    @classmethod
    def from_verdict(cls, verdict: Verdict, *, revision: str = "", prompt_guard_model: str = "",
                     prompt_guard_revision: str = "",
                     prompt_guard_scores: dict[str, float] | None = None) -> ModelOutput:
        return cls(
            model=verdict.model, raw_output=verdict.raw_output, unsafe=verdict.unsafe,
            p_unsafe=verdict.p_unsafe, threshold=verdict.threshold,
            categories=verdict.category_codes, model_label=verdict.model_label,
            revision=revision, prompt_guard_model=prompt_guard_model,
            prompt_guard_revision=prompt_guard_revision,
            prompt_guard_scores=dict(prompt_guard_scores or {}),
        )


@dataclass(frozen=True)
class ExampleInput:
    """A judged conversation as the app holds it. `prompt` is rendered when left empty."""

    conversation: Conversation
    family: str
    output: ModelOutput
    excluded: tuple[str, ...] = ()
    custom: tuple[CustomCategory, ...] = ()
    prompt: str = ""
    source: dict[str, Any] | None = None  # provenance: run and row, dataset and gold, queue


@dataclass(frozen=True)
class LabelInput:
    """One reviewer's gold judgement of an example."""

    reviewer: str
    label: str  # "safe" or "unsafe"
    categories: tuple[str, ...] = ()
    note: str = ""
    none_fits: bool = False  # unsafe, and none of the family's categories fits


@dataclass(frozen=True)
class SavedExample:
    example_id: int
    label_id: int
    new_example: bool  # False when the same content was already stored
    label_action: str  # "create", "edit" or "unchanged"


@dataclass(frozen=True)
class StoredLabel:
    id: int
    example_id: int
    reviewer: str
    label: str
    categories: tuple[str, ...]
    note: str
    model_was_right: bool
    created_at: str
    updated_at: str
    none_fits: bool = False


@dataclass(frozen=True)
class LabelEvent:
    """One entry of the audit trail: a label created, edited or deleted."""

    id: int
    label_id: int
    example_id: int
    action: str  # "create", "edit" or "delete"
    reviewer: str
    reason: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: str


@dataclass(frozen=True)
class StoredExample:
    """An example read back, its conversation rebuilt with the stored images."""

    id: int
    created_at: str
    content_hash: str
    family: str
    conversation: Conversation
    messages: list[dict[str, Any]]  # Hugging Face chat format; image paths are SHA-256 keys
    images: tuple[ImageBlob, ...]  # in conversation order
    excluded: tuple[str, ...]
    custom: tuple[dict[str, str], ...]
    prompt: str
    output: ModelOutput
    labels: tuple[StoredLabel, ...]
    final: Any = None  # labels.final.FinalLabel, or None while unsettled
    source: dict[str, Any] = field(default_factory=dict)  # provenance (see ExampleInput)


@dataclass(frozen=True)
class ExampleSummary:
    """One row of the examples browser."""

    id: int
    created_at: str
    family: str
    model: str
    preview: str
    image_count: int
    model_unsafe: bool
    p_unsafe: float
    model_categories: tuple[str, ...]
    gold_labels: tuple[str, ...]  # active labels, ordered by reviewer
    reviewers: tuple[str, ...]
    disagreement: bool  # some reviewer says the model was wrong


@dataclass(frozen=True)
class ExampleFilter:
    """Browser filters; every field left at None does not filter. Dates are ISO strings (UTC)."""

    label: str | None = None  # some active label says this
    category: str | None = None  # some active label names this code
    disagreement: bool | None = None  # True: some reviewer says the model was wrong
    model: str | None = None
    reviewer: str | None = None  # has an active label by this reviewer
    since: str | None = None  # created_at >= since
    until: str | None = None  # created_at < until
    text: str | None = None  # full-text search over conversation text and notes
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class MetricInputs:
    """One row per active label: the reviewer's gold against the model's verdict."""

    y_true: tuple[bool, ...]
    y_pred: tuple[bool, ...]
    scores: tuple[float, ...]
    gold_categories: tuple[frozenset[str], ...]
    pred_categories: tuple[frozenset[str], ...]  # empty when the verdict was safe
    codes: tuple[str, ...]  # every category code that occurs, in table order


@dataclass(frozen=True)
class ImportResult:
    examples_added: int
    examples_skipped: int
    labels_added: int
    labels_skipped: int
