"""Classifier metrics as pure functions, defined exactly as scikit-learn defines them.

Positives are "unsafe". Rates with an empty denominator are 0.0, as scikit-learn's
`zero_division` default gives, except where noted (NaN means "not defined" and becomes null in JSON).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labels.records import MetricInputs


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def matrix(self) -> list[list[int]]:
        """scikit-learn's layout for labels [safe, unsafe]: [[tn, fp], [fn, tp]]."""
        return [[self.tn, self.fp], [self.fn, self.tp]]


def _bools(values: Sequence[bool] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=bool).reshape(-1)


def confusion(y_true: Sequence[bool] | np.ndarray, y_pred: Sequence[bool] | np.ndarray) -> Confusion:
    t, p = _bools(y_true), _bools(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return Confusion(tp, fp, fn, t.size - tp - fp - fn)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def precision(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fn)


def f1(c: Confusion) -> float:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def false_positive_rate(c: Confusion) -> float:
    return _ratio(c.fp, c.fp + c.tn)


def precision_recall_curve(y_true: Sequence[bool] | np.ndarray,
                           scores: Sequence[float] | np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as sklearn.metrics.precision_recall_curve returns them.

    Thresholds are the distinct scores, ascending; precision ends in 1 and recall in 0. With no
    positives, recall is 1 at every threshold (scikit-learn's convention).
    """
    t = _bools(y_true)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} values but scores has {s.size}")
    if not t.size:
        raise ValueError("precision_recall_curve needs at least one example")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, t = s[order], t[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), t.size - 1]
    tps = np.cumsum(t)[last_of_each].astype(np.float64)
    fps = (last_of_each + 1) - tps
    predicted = tps + fps
    prec = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted != 0)
    rec = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    return (np.r_[prec[::-1], 1.0], np.r_[rec[::-1], 0.0], s[last_of_each][::-1])


def average_precision(y_true: Sequence[bool] | np.ndarray,
                      scores: Sequence[float] | np.ndarray) -> float:
    """AUPRC as sklearn.metrics.average_precision_score: sum of (R_n - R_n-1) * P_n."""
    prec, rec, _ = precision_recall_curve(y_true, scores)
    return float(max(0.0, -np.sum(np.diff(rec) * prec[:-1])))


def roc_curve(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as sklearn.metrics.roc_curve(..., drop_intermediate=False):
    one point per distinct score, descending, after a first point (0, 0) at threshold inf.

    Every point is kept: dropping the collinear ones (scikit-learn's default) would change the
    best recall under an FPR bound. A rate over an empty class is NaN (scikit-learn warns).
    """
    t = _bools(y_true)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} values but scores has {s.size}")
    if not t.size:
        raise ValueError("roc_curve needs at least one example")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, t = s[order], t[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), t.size - 1]
    tps = np.r_[0, np.cumsum(t)[last_of_each]].astype(np.float64)
    fps = np.r_[0, last_of_each + 1].astype(np.float64) - tps
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] else np.full(tps.shape, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_each]]


def roc_auc(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """The area under the ROC curve, as sklearn.metrics.roc_auc_score (trapezoids, so a tie
    between a positive and a negative counts one half); NaN unless both classes are present
    (scikit-learn warns and gives NaN too)."""
    t = _bools(y_true)
    if not t.size or t.all() or not t.any():
        return math.nan
    fpr, tpr, _ = roc_curve(t, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def cohen_kappa(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> float:
    """Cohen's kappa of two raters' yes/no judgements; NaN when chance agreement is total."""
    x, y = _bools(a), _bools(b)
    if x.shape != y.shape or not x.size:
        raise ValueError("cohen_kappa needs two equally long, non-empty sequences")
    observed = float(np.mean(x == y))
    px, py = float(np.mean(x)), float(np.mean(y))
    expected = px * py + (1 - px) * (1 - py)
    if expected == 1.0:
        return math.nan
    return (observed - expected) / (1 - expected)


@dataclass(frozen=True)
class CategoryRates:
    """Meta's per-category table: FNR over gold-positive rows, FPR over gold-negative rows."""

    code: str
    positives: int
    negatives: int
    false_negative_rate: float  # NaN when no gold row has the category
    false_positive_rate: float  # NaN when every gold row has it


def category_rates(gold: Sequence[frozenset[str]], predicted: Sequence[frozenset[str]],
                   codes: Sequence[str]) -> tuple[CategoryRates, ...]:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold rows but {len(predicted)} predicted rows")
    t, p = _membership(gold, codes), _membership(predicted, codes)
    pos, neg = t.sum(axis=0), (~t).sum(axis=0)
    fn, fp = (t & ~p).sum(axis=0), (~t & p).sum(axis=0)
    rows = [
        CategoryRates(code, int(pos[j]), int(neg[j]),
                      float(fn[j] / pos[j]) if pos[j] else math.nan,
                      float(fp[j] / neg[j]) if neg[j] else math.nan)
        for j, code in enumerate(codes)
    ]
    return tuple(rows)


def _membership(rows: Sequence[frozenset[str]], codes: Sequence[str]) -> np.ndarray:
    column = {code: j for j, code in enumerate(codes)}
    matrix = np.zeros((len(rows), len(codes)), dtype=bool)
    for i, row in enumerate(rows):
        for code in row:
            j = column.get(code)
            if j is not None:
                matrix[i, j] = True
    return matrix


@dataclass(frozen=True)
class ThresholdSuggestion:
    """The lowest threshold on p_unsafe whose false-positive rate stays within the target."""

    target_fpr: float
    threshold: float
    false_positive_rate: float
    recall: float
    precision: float


def threshold_for_fpr(y_true: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray,
                      target_fpr: float) -> ThresholdSuggestion:
    """Flag p_unsafe >= threshold: the most recall whose FPR does not exceed `target_fpr`."""
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be between 0 and 1, got {target_fpr}")
    t = _bools(y_true)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not t.size:
        raise ValueError("threshold_for_fpr needs at least one example")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, t = s[order], t[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), t.size - 1]
    tps = np.cumsum(t)[last_of_each]
    fps = (last_of_each + 1) - tps
    negatives, positives = int((~t).sum()), int(t.sum())
    fpr = fps / negatives if negatives else np.zeros(len(fps))
    ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
    if not ok.size:
        # Even the highest score flags too many: suggest flagging nothing.
        return ThresholdSuggestion(target_fpr, float(np.nextafter(s[0], np.inf)), 0.0, 0.0, 0.0)
    i = int(ok[-1])  # fpr grows as the threshold falls, so the last allowed one has most recall
    return ThresholdSuggestion(
        target_fpr, float(s[last_of_each[i]]), float(fpr[i]),
        float(tps[i] / positives) if positives else 0.0,
        float(tps[i] / (tps[i] + fps[i])))


@dataclass(frozen=True)
class MetricsReport:
    n: int
    confusion: Confusion
    precision: float
    recall: float
    f1: float
    false_positive_rate: float
    auprc: float
    categories: tuple[CategoryRates, ...]
    suggested: ThresholdSuggestion | None

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n, "precision": self.precision, "recall": self.recall, "f1": self.f1,
            "fpr": self.false_positive_rate, "auprc": _finite(self.auprc),
            "confusion_matrix": {"labels": ["safe", "unsafe"], "matrix": self.confusion.matrix,
                                 "tp": self.confusion.tp, "fp": self.confusion.fp,
                                 "fn": self.confusion.fn, "tn": self.confusion.tn},
            "categories": [{"code": r.code, "positives": r.positives, "negatives": r.negatives,
                            "fnr": _finite(r.false_negative_rate),
                            "fpr": _finite(r.false_positive_rate)} for r in self.categories],
            "suggested_threshold": None if self.suggested is None else {
                "target_fpr": self.suggested.target_fpr, "threshold": self.suggested.threshold,
                "fpr": self.suggested.false_positive_rate, "recall": self.suggested.recall,
                "precision": self.suggested.precision},
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def evaluate(inputs: MetricInputs, *, target_fpr: float | None = 0.05) -> MetricsReport:
    """Every metric over the stored labels; AUPRC is NaN when there are none."""
    c = confusion(inputs.y_true, inputs.y_pred)
    has_rows = c.n > 0
    return MetricsReport(
        n=c.n, confusion=c, precision=precision(c), recall=recall(c), f1=f1(c),
        false_positive_rate=false_positive_rate(c),
        auprc=average_precision(inputs.y_true, inputs.scores) if has_rows else math.nan,
        categories=category_rates(inputs.gold_categories, inputs.pred_categories, inputs.codes),
        suggested=(threshold_for_fpr(inputs.y_true, inputs.scores, target_fpr)
                   if has_rows and target_fpr is not None else None),
    )
