"""Measure, for Prompt Guard: its stored scores against the reviewers' Prompt Guard labels
(labels.prompt_guard.prompt_guard_rows), with the figures its model card gives
(guard.eval.prompt_guard_metrics). Gradio-free: plain rows in, tables and words out.

One report per Prompt Guard model and preprocessing: scores of different models (or of one
model reading a text two ways) are not comparable. A label saved against no score (Prompt
Guard did not score that message) is counted, not measured. The stored score is the served
one, the maximum over 512-token windows; the windows themselves are not stored with an
example, so Measure gives the message level.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from guard.eval.prompt_guard_eval import DEFAULT_THRESHOLD
from guard.eval.prompt_guard_metrics import CARD_FPR, AttackReport, ScoredMessage, attack_report
from labels.errors import InvalidLabel
from labels.prompt_guard import PromptGuardRow, prompt_guard_rows

HEADERS = ["Prompt Guard model", "preprocessing", "malicious", "benign", "unscored",
           "precision", "recall", "FPR", "ROC AUC", "AUPRC", "recall at 1% FPR",
           "suggested threshold", "its precision", "its recall", "its FPR"]


@dataclass(frozen=True)
class PromptGuardMeasured:
    rows: list[list[Any]]  # HEADERS, one per model and preprocessing
    words: str  # Markdown: what each report says, and its warnings
    reports: list[AttackReport]
    preprocessing: list[str]  # of each report

    def to_json(self) -> dict[str, Any]:
        return {"reports": [{**r.to_json(), "preprocessing": p}
                            for r, p in zip(self.reports, self.preprocessing, strict=True)]}


def parse_number(value: Any, what: str, default: float) -> float:
    """A rate or threshold from the page: empty gives `default`; 0 to 1, else InvalidLabel."""
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:  # also NaN
        raise InvalidLabel(f"The {what} must be a number from 0 to 1, got {value!r}.")
    return number


def measure_prompt_guard(store: Any, *, labels: str | None = "final",
                         target_fpr: Any = CARD_FPR, threshold: Any = None
                         ) -> PromptGuardMeasured:
    """Prompt Guard's stored scores against its labels (`labels`: "final", "all" or
    "reviewer:NAME"), flagged at `threshold` (empty: LlamaFirewall's 0.9), with a threshold
    suggested for `target_fpr`."""
    target = parse_number(target_fpr, "target false-positive rate", CARD_FPR)
    at = parse_number(threshold, "Prompt Guard threshold", DEFAULT_THRESHOLD)
    found = prompt_guard_rows(store, labels=(labels or "final").strip() or "final")
    if not found:
        raise InvalidLabel("No Prompt Guard labels match: label user messages benign or "
                           "malicious (Review panel, queues or an example's page) first. By "
                           "default only final labels count; choose 'all' to see every label.")
    groups: dict[tuple[str, str], list[PromptGuardRow]] = defaultdict(list)
    for row in found:
        groups[(row.model, row.preprocessing)].append(row)
    reports, table, words = [], [], []
    for (model, preprocessing), rows in sorted(groups.items()):
        scored = [ScoredMessage(f"{r.example_id}:{r.message_index}", r.malicious,
                                float(r.score)) for r in rows if r.score is not None]
        report = attack_report(scored, model=model, threshold=at, target_fprs=(target,),
                               unscored=len(rows) - len(scored),
                               source=f"Prompt Guard labels: {labels or 'final'}")
        reports.append(report)
        m = report.messages
        s = m.suggestions[0] if m.suggestions else None
        table.append([model or "(none)", preprocessing, m.malicious, m.benign, report.unscored,
                      _num(m.precision), _num(m.recall), _num(m.fpr), _num(m.roc_auc),
                      _num(m.auprc), _num(m.recall_at_1pct_fpr),
                      *(["-"] * 4 if s is None else
                        [_num(s.threshold), _num(s.precision), _num(s.recall), _num(s.fpr)])])
        head = f"**{model or '(no model)'}**, preprocessing {preprocessing}. {report.sentence}"
        head = head.replace("window scores not known for these messages",
                            "the stored score is each message's maximum over its windows")
        if report.unscored:
            head += f" {report.unscored} labelled messages have no stored score."
        if s is not None:
            head += (f" Suggested threshold for FPR ≤ {target:g}: **{s.threshold:.4f}** "
                     f"(precision {s.precision:.3f}, recall {s.recall:.3f}, FPR {s.fpr:.3f}).")
        notes = list(m.warnings) + [w for w in (s.warnings if s else ())
                                    if w not in m.warnings and not w.startswith("Only ")]
        words.append("\n\n".join([head, *(f"⚠ {w}" for w in notes)]))
    return PromptGuardMeasured(table, "\n\n".join(words), reports,
                               [p for _, p in sorted(groups)])


def _num(value: float) -> str:
    return "-" if value is None or math.isnan(value) or math.isinf(value) else f"{value:.4f}"
