"""Model-card style reports of a stored run, and two runs side by side. Pure: no model, no SQL.

Metrics come from labels.metrics (defined as scikit-learn defines them), over the rows that have
a gold label and a verdict. Per-category false-negative and false-positive rates cover only the
codes the dataset's gold labels use: a code the data never names cannot be judged missed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from guard.eval.prompt_guard_eval import Windows, run_attack_report
from guard.eval.prompt_guard_metrics import AttackReport
from labels.content import code_key
from labels.metrics import (
    Confusion,
    MetricsReport,
    average_precision,
    confusion,
    evaluate,
    f1,
    false_positive_rate,
    precision,
    precision_recall_curve,
    recall,
)
from labels.records import MetricInputs
from labels.runs import EvalResult, EvalRun

# Meta's LlamaFirewall blocks at this Prompt Guard score (guard.engines.prompt_guard.FIREWALL_THRESHOLD;
# repeated here so that reports load without torch).
PROMPT_GUARD_THRESHOLD = 0.9
MAX_CURVE_POINTS = 200
HEADLINE = ("n", "precision", "recall", "f1", "fpr", "auprc")


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    precision: float
    recall: float


@dataclass(frozen=True)
class PromptGuardMetrics:
    """Prompt Guard's score against the same gold: it looks for attacks, not harm, so read it
    as "how much of the harm would the attack detector also stop"."""

    model: str
    threshold: float
    n: int
    confusion: Confusion
    precision: float
    recall: float
    f1: float
    fpr: float
    auprc: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "threshold": self.threshold, "n": self.n,
                "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "fpr": self.fpr, "auprc": _finite(self.auprc),
                "tp": self.confusion.tp, "fp": self.confusion.fp, "fn": self.confusion.fn,
                "tn": self.confusion.tn}


@dataclass(frozen=True)
class EvalReport:
    run: EvalRun
    metrics: MetricsReport
    labelled: int  # rows with a gold label and a verdict: the rows measured
    unlabelled: int
    failed: int  # rows stored with an error
    curve: tuple[CurvePoint, ...]
    prompt_guard: PromptGuardMetrics | None
    has_categories: bool
    results: tuple[EvalResult, ...] = field(repr=False, compare=False, default=())
    # Prompt Guard against the dataset's attack column (guard.eval.prompt_guard_metrics);
    # None when no row has one.
    prompt_guard_attack: AttackReport | None = None

    def headline(self) -> dict[str, float | None]:
        data = self.metrics.to_json()
        return {key: data[key] for key in HEADLINE}

    def to_json(self) -> dict[str, Any]:
        s = self.run.settings
        data = {
            **self.metrics.to_json(),
            "labelled": self.labelled, "unlabelled": self.unlabelled, "failed": self.failed,
            "threshold": s.threshold,
            "run": {"name": s.name, "dataset": s.dataset, "dataset_sha256": s.dataset_sha256,
                    "format": s.format, "model": s.model,
                    "prompt_guard_model": s.prompt_guard_model or None,
                    "excluded": list(s.excluded), "policy": s.policy or None,
                    "status": self.run.status,
                    "created_at": self.run.created_at, "finished_at": self.run.finished_at,
                    "total_rows": self.run.total_rows, "done_rows": self.run.done_rows},
            "pr_curve": [{"threshold": p.threshold, "precision": p.precision, "recall": p.recall}
                         for p in self.curve],
            "prompt_guard": None if self.prompt_guard is None else self.prompt_guard.to_json(),
            "prompt_guard_attack": (None if self.prompt_guard_attack is None
                                    else self.prompt_guard_attack.to_json()),
        }
        if not self.has_categories:
            data["categories"] = []
        return data


def build_report(run: EvalRun, results: Sequence[EvalResult], *,
                 max_curve_points: int = MAX_CURVE_POINTS,
                 attack: Mapping[str, bool] | None = None, windows: Windows | None = None,
                 prompt_guard_threshold: float | None = None) -> EvalReport:
    """`attack` (row id -> the dataset's attack label) adds Prompt Guard's figures against it,
    with `windows` (row id -> its window scores) the window level too, at
    `prompt_guard_threshold` (None: LlamaFirewall's 0.9; a policy run passes its policy's)."""
    measured = [r for r in results if r.gold is not None and r.verdict is not None]
    gold_codes = {c for r in measured for c in r.gold_categories}
    codes = tuple(sorted(gold_codes, key=code_key))
    inputs = MetricInputs(
        y_true=tuple(bool(r.gold) for r in measured),
        y_pred=tuple(r.predicted_unsafe for r in measured),
        scores=tuple(float(r.p_unsafe or 0.0) for r in measured),
        gold_categories=tuple(frozenset(r.gold_categories) for r in measured),
        pred_categories=tuple(frozenset(r.categories) if r.predicted_unsafe else frozenset()
                              for r in measured),
        codes=codes)
    return EvalReport(
        run=run, metrics=evaluate(inputs), labelled=len(measured),
        unlabelled=sum(r.gold is None for r in results),
        failed=sum(r.error is not None for r in results),
        curve=_curve(inputs.y_true, inputs.scores, max_curve_points),
        prompt_guard=_prompt_guard(run, results), has_categories=bool(codes),
        results=tuple(results),
        prompt_guard_attack=run_attack_report(
            run, results, attack or {}, windows,
            threshold=PROMPT_GUARD_THRESHOLD if prompt_guard_threshold is None
            else prompt_guard_threshold))


def at_threshold(results: Sequence[EvalResult], threshold: float) -> tuple[EvalResult, ...]:
    """The stored results read at another threshold: unsafe when the stored p_unsafe >= it.

    No model runs: the answer text and the categories the model named stay as stored (a row the
    model answered "safe" that a lower threshold flags names no category). Failed rows stay
    failed.
    """
    return tuple(r if r.verdict is None or r.p_unsafe is None
                 else replace(r, verdict="unsafe" if r.p_unsafe >= threshold else "safe")
                 for r in results)


def report_at(run: EvalRun, results: Sequence[EvalResult], threshold: float | None = None, *,
              max_curve_points: int = MAX_CURVE_POINTS,
              attack: Mapping[str, bool] | None = None, windows: Windows | None = None,
              prompt_guard_threshold: float | None = None) -> EvalReport:
    """The report of a stored run at `threshold` (None: the run's own), from its stored scores;
    Prompt Guard's figures at `prompt_guard_threshold` (None: 0.9).

    The report's run carries the threshold applied; the stored run keeps its own.
    """
    extra = {"max_curve_points": max_curve_points, "attack": attack, "windows": windows,
             "prompt_guard_threshold": prompt_guard_threshold}
    if threshold is None or float(threshold) == run.settings.threshold:
        return build_report(run, results, **extra)
    shown = replace(run, settings=replace(run.settings, threshold=float(threshold)))
    return build_report(shown, at_threshold(results, float(threshold)), **extra)


def _curve(y_true: Sequence[bool], scores: Sequence[float], limit: int) -> tuple[CurvePoint, ...]:
    if not y_true:
        return ()
    prec, rec, thresholds = precision_recall_curve(y_true, scores)
    # The last point (precision 1, recall 0) has no threshold; keep it at threshold 1.
    points = [CurvePoint(float(t), float(p), float(r))
              for t, p, r in zip(np.r_[thresholds, 1.0], prec, rec, strict=True)]
    if len(points) > limit:
        keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
        points = [points[i] for i in keep]
    return tuple(points)


def _prompt_guard(run: EvalRun, results: Sequence[EvalResult]) -> PromptGuardMetrics | None:
    scored = [r for r in results if r.gold is not None and r.p_malicious is not None]
    if not scored:
        return None
    y_true = [bool(r.gold) for r in scored]
    scores = [float(r.p_malicious) for r in scored]
    c = confusion(y_true, [s >= PROMPT_GUARD_THRESHOLD for s in scores])
    return PromptGuardMetrics(
        model=run.settings.prompt_guard_model, threshold=PROMPT_GUARD_THRESHOLD, n=c.n,
        confusion=c, precision=precision(c), recall=recall(c), f1=f1(c),
        fpr=false_positive_rate(c), auprc=average_precision(y_true, scores))


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


# Comparing runs


@dataclass(frozen=True)
class ComparisonRow:
    metric: str
    a: float | None
    b: float | None

    @property
    def diff(self) -> float | None:
        """b - a; None when either side is not defined."""
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Comparison:
    run_a: str
    run_b: str
    rows: tuple[ComparisonRow, ...]
    shared_rows: int  # dataset rows both runs judged
    changed_verdicts: int  # of those, rows whose verdict differs
    policy_a: str = ""  # name@version of each run's policy; "" for none
    policy_b: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_a": self.run_a, "run_b": self.run_b, "policy_a": self.policy_a or None,
                "policy_b": self.policy_b or None, "shared_rows": self.shared_rows,
                "changed_verdicts": self.changed_verdicts,
                "metrics": [{"metric": r.metric, "a": r.a, "b": r.b, "diff": r.diff}
                            for r in self.rows]}


def compare(a: EvalReport, b: EvalReport) -> Comparison:
    """Two runs side by side: every metric of each and the difference (b - a)."""
    flat_a, flat_b = _flat(a), _flat(b)
    names = list(flat_a) + [k for k in flat_b if k not in flat_a]
    rows = tuple(ComparisonRow(k, flat_a.get(k), flat_b.get(k)) for k in names)
    verdicts_a = {r.row_id: r.verdict for r in a.results if r.verdict is not None}
    verdicts_b = {r.row_id: r.verdict for r in b.results if r.verdict is not None}
    shared = verdicts_a.keys() & verdicts_b.keys()
    return Comparison(a.run.name, b.run.name, rows, len(shared),
                      sum(verdicts_a[k] != verdicts_b[k] for k in shared),
                      a.run.settings.policy, b.run.settings.policy)


def _flat(report: EvalReport) -> dict[str, float | None]:
    data = report.metrics.to_json()
    flat: dict[str, float | None] = {k: data[k] for k in HEADLINE}
    for key in ("tp", "fp", "fn", "tn"):
        flat[key] = data["confusion_matrix"][key]
    if report.prompt_guard is not None:
        pg = report.prompt_guard.to_json()
        for key in ("precision", "recall", "fpr", "auprc"):
            flat[f"prompt_guard_{key}"] = pg[key]
    if report.prompt_guard_attack is not None:
        for level in (report.prompt_guard_attack.messages, report.prompt_guard_attack.windows):
            if level is None:
                continue
            data_pg = level.to_json()
            for key in ("n", "precision", "recall", "fpr", "roc_auc", "auprc",
                        "recall_at_1pct_fpr"):
                flat[f"prompt_guard_attack_{level.level}_{key}"] = data_pg[key]
        flat["prompt_guard_attack_multi_window_messages"] = (
            report.prompt_guard_attack.multi_window
            if report.prompt_guard_attack.windows_known else None)
    if report.has_categories:
        for row in data["categories"]:
            flat[f"{row['code']}_fnr"] = row["fnr"]
            flat[f"{row['code']}_fpr"] = row["fpr"]
    return flat


# Plain-text tables for the terminal


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_report(report: EvalReport) -> str:
    s = report.run.settings
    lines = [f"run: {s.name}", *([f"policy: {s.policy}"] if s.policy else []),
             f"rows measured: {report.labelled} (unlabelled {report.unlabelled}, "
             f"failed {report.failed})"]
    flat = _flat(report)
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        lines.append(f"{key:<{width}} {_cell(value)}")
    return "\n".join(lines)


def format_comparison(comparison: Comparison) -> str:
    width = max([len(r.metric) for r in comparison.rows] + [6])
    policies = comparison.policy_a or comparison.policy_b
    lines = [f"A: {comparison.run_a}" + (f" (policy {comparison.policy_a or 'none'})"
                                         if policies else ""),
             f"B: {comparison.run_b}" + (f" (policy {comparison.policy_b or 'none'})"
                                         if policies else ""),
             f"{'metric':<{width}} {'A':>10} {'B':>10} {'B - A':>10}"]
    for r in comparison.rows:
        lines.append(f"{r.metric:<{width}} {_cell(r.a):>10} {_cell(r.b):>10} "
                     f"{_cell(r.diff, signed=True):>10}")
    lines.append(f"verdicts that differ: {comparison.changed_verdicts} of "
                 f"{comparison.shared_rows} shared rows")
    return "\n".join(lines)
