"""Prompt Guard measured as its model card measures it, against an attack label. Pure: scores
and labels in, no model, no SQL.

The ground truth is a dataset's `attack` column (guard.core.datasets.ATTACK_COLUMNS) or a
reviewer's Prompt Guard label: is the text a jailbreak or prompt injection. It is not the
harm label: Prompt Guard looks for attacks, not harm.

Metrics, each defined as scikit-learn defines it (labels.metrics): precision, recall, F1 and FPR
at the threshold (malicious when score >= threshold), ROC AUC (`roc_auc_score`), AUPRC
(`average_precision_score`), recall at 1% FPR (the card's figure: the highest recall of any
threshold whose FPR is at most 1%, read from `roc_curve(..., drop_intermediate=False)`), and
thresholds suggested for target FPRs with their precision and recall
(guard.eval.thresholds.suggest, with its warnings).

Levels: Prompt Guard scores a long text in 512-token windows and serves the maximum. Message
level (one row per message, its served score) is what the card reports and what a deployment
sees; window level (one row per window, each carrying its message's label) shows how the
windows of long messages score, and is given when the window scores are known. A malicious
message's benign windows count as misses there: read it beside the message level, never alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guard.eval.thresholds import MIN_PER_CLASS, Suggestion, suggest
from labels.metrics import (
    Confusion,
    average_precision,
    confusion,
    f1,
    false_positive_rate,
    precision,
    recall,
    roc_curve,
)
from labels.metrics import roc_auc as _roc_auc

CARD_FPR = 0.01  # the card reports recall at 1% FPR
TARGET_FPRS = (0.001, 0.01, 0.05)  # suggested thresholds, by default
CLASSES = ("malicious", "benign")
MESSAGE, WINDOW = "message", "window"


def recall_at_fpr(y_true: Sequence[bool], scores: Sequence[float], max_fpr: float = CARD_FPR
                  ) -> tuple[float, float]:
    """(recall, threshold): the highest recall of any threshold whose FPR is at most `max_fpr`,
    and the lowest such threshold (inf: flag nothing). NaN recall unless both classes are
    present."""
    t = np.asarray(y_true, dtype=bool).reshape(-1)
    if not t.size or t.all() or not t.any():
        return math.nan, math.nan
    fpr, tpr, thresholds = roc_curve(t, scores)
    ok = np.flatnonzero(fpr <= max_fpr + 1e-12)  # fpr grows along the curve; (0, 0) is first
    i = int(ok[-1])
    return float(tpr[i]), float(thresholds[i])


@dataclass(frozen=True)
class AttackMetrics:
    """One level's figures (MESSAGE or WINDOW). NaN where a figure is not defined."""

    level: str
    threshold: float
    confusion: Confusion
    precision: float
    recall: float
    f1: float
    fpr: float
    roc_auc: float  # NaN unless both classes are present
    auprc: float  # NaN with no rows
    recall_at_1pct_fpr: float  # NaN unless both classes are present
    threshold_at_1pct_fpr: float  # the threshold that gives it (inf: flag nothing)
    suggestions: tuple[Suggestion, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return self.confusion.n

    @property
    def malicious(self) -> int:
        return self.confusion.tp + self.confusion.fn

    @property
    def benign(self) -> int:
        return self.confusion.fp + self.confusion.tn

    def to_json(self) -> dict[str, Any]:
        c = self.confusion
        return {"level": self.level, "n": self.n, "malicious": self.malicious,
                "benign": self.benign, "threshold": self.threshold,
                "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "fpr": self.fpr, "roc_auc": _finite(self.roc_auc), "auprc": _finite(self.auprc),
                "recall_at_1pct_fpr": _finite(self.recall_at_1pct_fpr),
                "threshold_at_1pct_fpr": _finite(self.threshold_at_1pct_fpr),
                "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
                "suggested_thresholds": [s.to_json() for s in self.suggestions],
                "warnings": list(self.warnings)}


def attack_metrics(y_true: Sequence[bool], scores: Sequence[float], *, threshold: float,
                   level: str = MESSAGE, target_fprs: Sequence[float] = TARGET_FPRS,
                   min_per_class: int = MIN_PER_CLASS) -> AttackMetrics:
    """Every figure of one level over (label, score) pairs; malicious when score >= threshold."""
    labels = [bool(t) for t in y_true]
    values = [float(s) for s in scores]
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels but {len(values)} scores")
    c = confusion(labels, [s >= threshold for s in values])
    if not labels:
        return AttackMetrics(level, threshold, c, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan,
                             math.nan, math.nan,
                             warnings=(f"No {level} has an attack label and a score.",))
    at_card, card_threshold = recall_at_fpr(labels, values, CARD_FPR)
    warnings = []
    if not c.tp + c.fn or not c.fp + c.tn:
        missing = CLASSES[0] if not c.tp + c.fn else CLASSES[1]
        warnings.append(f"No {missing} {level}s: ROC AUC and recall at 1% FPR need both "
                        "malicious and benign rows.")
    for name, number in (("precision", precision(c)), ("recall", recall(c))):
        if number == 0 and c.tp + c.fn:
            warnings.append(f"{name} is 0 at threshold {threshold:g}.")
    suggestions = tuple(suggest(labels, values, "fpr", target, min_per_class=min_per_class,
                                classes=CLASSES) for target in target_fprs)
    for name, count in zip(CLASSES, (c.tp + c.fn, c.fp + c.tn), strict=True):
        if 0 < count < min_per_class:
            warnings.append(f"Only {count} {name} {level}s: too few to trust these rates (one "
                            f"{level} moves a rate by {1 / count:.0%}); label at least "
                            f"{min_per_class}.")
    if c.fp + c.tn and c.fp + c.tn < 1 / CARD_FPR:
        warnings.append(f"Recall at 1% FPR on {c.fp + c.tn} benign {level}s allows no false "
                        f"positive at all; label at least {int(1 / CARD_FPR)} benign ones for it "
                        "to mean 1%.")
    return AttackMetrics(level, threshold, c, precision(c), recall(c), f1(c),
                         false_positive_rate(c), _roc_auc(labels, values),
                         average_precision(labels, values), at_card, card_threshold,
                         suggestions, tuple(warnings))


@dataclass(frozen=True)
class ScoredMessage:
    """One message with its attack label and Prompt Guard's scores."""

    row_id: str
    malicious: bool
    score: float  # the served score: the maximum over its windows
    window_scores: tuple[float, ...] = ()  # one per 512-token window; () when not known


@dataclass(frozen=True)
class AttackReport:
    """Prompt Guard against the attack labels: message level always, window level when every
    message's window scores are known."""

    model: str
    threshold: float
    messages: AttackMetrics
    windows: AttackMetrics | None
    multi_window: int  # messages that spanned several windows (of those with window scores)
    windows_known: int  # messages whose window scores are known
    unscored: int = 0  # messages with an attack label but no score (refused: too long)
    source: str = ""  # where the labels came from, in words
    rows: tuple[ScoredMessage, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model or None, "threshold": self.threshold,
                "source": self.source, "messages": self.messages.to_json(),
                "windows": None if self.windows is None else self.windows.to_json(),
                "multi_window_messages": self.multi_window,
                "window_scores_known": self.windows_known, "unscored": self.unscored}

    @property
    def sentence(self) -> str:
        m = self.messages
        spans = (f"{self.multi_window} of {self.windows_known} messages spanned several "
                 "512-token windows" if self.windows_known else
                 "window scores not known for these messages")
        return (f"Prompt Guard on {m.malicious} malicious and {m.benign} benign messages: "
                f"ROC AUC {_show(m.roc_auc)}, recall at 1% FPR {_show(m.recall_at_1pct_fpr)}, "
                f"at threshold {self.threshold:g} precision {m.precision:.3f}, recall "
                f"{m.recall:.3f}, FPR {m.fpr:.3f}; {spans}.")


def attack_report(messages: Sequence[ScoredMessage], *, model: str = "", threshold: float,
                  target_fprs: Sequence[float] = TARGET_FPRS, unscored: int = 0,
                  source: str = "", min_per_class: int = MIN_PER_CLASS) -> AttackReport:
    """Both levels over `messages`. The window level needs every message's window scores."""
    options = {"threshold": threshold, "target_fprs": target_fprs,
               "min_per_class": min_per_class}
    by_message = attack_metrics([m.malicious for m in messages], [m.score for m in messages],
                                level=MESSAGE, **options)
    known = [m for m in messages if m.window_scores]
    by_window = None
    if messages and len(known) == len(messages):
        by_window = attack_metrics([m.malicious for m in known for _ in m.window_scores],
                                   [s for m in known for s in m.window_scores], level=WINDOW,
                                   **options)
    return AttackReport(model, threshold, by_message, by_window,
                        sum(len(m.window_scores) > 1 for m in known), len(known), unscored,
                        source, tuple(messages))


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _show(value: float) -> str:
    return "undefined" if math.isnan(value) else f"{value:.4f}"
