"""Thresholds that say what they cost: for a target FPR or a target recall, the threshold on
p_unsafe, its precision, recall and FPR on the labelled rows, and warnings when one of them is
zero or the labelled set is too small to trust. Pure: scores and gold labels in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from labels.metrics import threshold_for_fpr

TARGETS = ("fpr", "recall")
# Below this many labelled rows of a class, one row moves its rate by more than 3 points.
MIN_PER_CLASS = 30


@dataclass(frozen=True)
class Suggestion:
    target: str  # "fpr" or "recall"
    value: float  # the target asked for
    threshold: float
    precision: float
    recall: float
    fpr: float
    positives: int  # labelled unsafe rows
    negatives: int  # labelled safe rows
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "value": self.value, "threshold": self.threshold,
                "threshold_text": show_threshold(self.threshold), "precision": self.precision,
                "recall": self.recall, "fpr": self.fpr, "positives": self.positives,
                "negatives": self.negatives, "warnings": list(self.warnings)}

    @property
    def sentence(self) -> str:
        what = "FPR" if self.target == "fpr" else "recall"
        bound = "<=" if self.target == "fpr" else ">="
        return (f"Threshold {show_threshold(self.threshold)} for {what} {bound} {self.value:g}: "
                f"precision {self.precision:.3f}, recall {self.recall:.3f}, FPR {self.fpr:.3f} "
                f"on {self.positives} unsafe and {self.negatives} safe labelled rows.")


def show_threshold(value: float) -> str:
    """Enough digits to tell thresholds apart (0.003 is not '0.00'), none that mean nothing."""
    if value == 0 or value >= 0.01:
        return f"{value:.4f}".rstrip("0").rstrip(".") if value < 1 else f"{value:g}"
    return f"{value:.3g}" if value >= 1e-4 else f"{value:.2e}"


def suggest(y_true: Sequence[bool], scores: Sequence[float], target: str, value: float, *,
            min_per_class: int = MIN_PER_CLASS,
            classes: tuple[str, str] = ("unsafe", "safe")) -> Suggestion:
    """The threshold that meets `target` ("fpr": at most `value`, with the most recall;
    "recall": at least `value`, with the fewest false positives), with what it costs.
    `classes` names the positive and negative class in the warnings (Prompt Guard:
    ("malicious", "benign"))."""
    if target not in TARGETS:
        raise ValueError(f"The target must be one of {', '.join(TARGETS)}, got {target!r}.")
    if not isinstance(value, int | float) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"The target {target} must be a number from 0 to 1, got {value!r}.")
    pairs = [(bool(t), float(s)) for t, s in zip(y_true, scores, strict=True)]
    if not pairs:
        raise ValueError("No labelled rows with a score: run an evaluation on labelled data "
                         "first.")
    positives = sum(t for t, _ in pairs)
    negatives = len(pairs) - positives
    if target == "fpr":
        threshold = threshold_for_fpr([t for t, _ in pairs], [s for _, s in pairs],
                                      value).threshold
    else:
        ranked = sorted((s for t, s in pairs if t), reverse=True)
        needed = math.ceil(value * len(ranked) - 1e-9)
        threshold = ranked[needed - 1] if needed >= 1 and ranked else \
            math.nextafter(max(s for _, s in pairs), math.inf)
    tp = sum(t and s >= threshold for t, s in pairs)
    fp = sum((not t) and s >= threshold for t, s in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    fpr = fp / negatives if negatives else 0.0
    warnings = []
    for name, number in (("precision", precision), ("recall", recall)):
        if number == 0:
            flags = f"nothing that is {classes[0]}" if name == "recall" else \
                f"only {classes[1]} rows"
            warnings.append(f"{name} is 0 at this threshold: it flags {flags}; it is no usable "
                            "threshold.")
    if target == "recall" and positives and recall < value:
        warnings.append(f"No threshold reaches recall {value:g} on these rows.")
    for name, count in ((classes[0], positives), (classes[1], negatives)):
        if count < min_per_class:
            warnings.append(f"Only {count} labelled {name} rows: too few to trust this rate "
                            f"(one row moves it by {1 / max(count, 1):.0%}); label at least "
                            f"{min_per_class}.")
    return Suggestion(target, float(value), float(threshold), precision, recall, fpr,
                      positives, negatives, tuple(warnings))
