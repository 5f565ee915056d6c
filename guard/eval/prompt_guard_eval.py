"""Prompt Guard against a dataset's attack column, for a stored run: where the labels and the
window scores come from. The maths is guard.eval.prompt_guard_metrics.

What a run keeps: each row's served Prompt Guard score (`p_malicious`, the maximum over its
windows), its attack label from the dataset and, for a labelled row, the score of each of its
windows (migration m008; the runner takes them from its own Prompt Guard pass). So a stored run's
figures, both levels, are recomputed from the run alone: no model, no dataset (`stored_attack`).

Runs stored before m008 keep only the served score: their attack labels are read again from the
run's dataset (refused when its content changed), and their window scores come from a second
Prompt Guard pass over the labelled prompts (`with_windows`), which the CLI and the Batch
evaluation tab make only for such rows; without it the report gives the message level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from guard.core.datasets import Dataset, read_dataset
from guard.core.errors import DatasetError, GuardError
from guard.core.prompt_guard_text import TextScore
from guard.eval.prompt_guard_metrics import TARGET_FPRS, AttackReport, ScoredMessage, attack_report
from labels.runs import EvalResult, EvalRun, Runs, RunSettings

# Meta's LlamaFirewall blocks at this score (as guard.eval.report.PROMPT_GUARD_THRESHOLD).
DEFAULT_THRESHOLD = 0.9
WINDOW_BATCH = 64  # prompts per Prompt Guard call of the window pass
ScoreMany = Callable[[list[str]], list[TextScore]]
Windows = Mapping[str, tuple[float, ...]]  # row id -> each window's score


def attack_labels(dataset: Dataset) -> dict[str, bool]:
    """row id -> attack label, for the rows whose attack column says."""
    return {r.row_id: r.attack for r in dataset.rows if r.attack is not None}


def run_attack_labels(settings: RunSettings) -> tuple[dict[str, bool], str]:
    """(labels, problem) of a stored run: its dataset read again, its content checked against
    the run's hash; ({}, why) when the file is gone or changed."""
    try:
        dataset = read_dataset(settings.dataset, settings.format)
    except DatasetError as exc:
        return {}, f"its dataset cannot be read again ({exc})"
    if dataset.sha256 != settings.dataset_sha256:
        return {}, f"{Path(settings.dataset).name} is no longer the file the run judged"
    return attack_labels(dataset), ""


@dataclass(frozen=True)
class RunAttack:
    """A stored run's attack labels and window scores, by row id, and where they came from."""

    labels: dict[str, bool]
    windows: dict[str, tuple[float, ...]]
    read_again: int = 0  # rows stored before m008 whose labels came from the dataset again
    problem: str = ""  # why such rows have no label (their dataset is gone or changed)

    def missing_windows(self, results: Sequence[EvalResult]) -> list[str]:
        """Labelled rows with a served score but no window scores (stored before m008)."""
        return [r.row_id for r in results if r.row_id in self.labels
                and r.p_malicious is not None and r.row_id not in self.windows]


def stored_attack(runs: Runs, run: EvalRun, results: Sequence[EvalResult], *,
                  dataset: Dataset | None = None,
                  read: Callable[[RunSettings], tuple[dict[str, bool], str]] = run_attack_labels
                  ) -> RunAttack:
    """The run's stored attack labels and window scores. Rows stored before m008 (which keeps
    them), and every row of a run that stored no label at all (stored before m008, or by a
    writer that does not keep them), take their labels from `dataset` when it is the file the
    run judged, else from the run's dataset read again by `read`, as before m008; nothing is
    read for a run that stored its labels."""
    labels = {r.row_id: r.attack for r in results if r.attack is not None}
    windows = {r.row_id: tuple(r.window_scores) for r in results if r.window_scores}
    old = runs.stored_before_attack(run.id) if labels else {r.row_id for r in results}
    if not old:
        return RunAttack(labels, windows)
    if dataset is not None and dataset.sha256 == run.settings.dataset_sha256:
        theirs, problem = attack_labels(dataset), ""
    else:
        theirs, problem = read(run.settings)
    found = {k: v for k, v in theirs.items() if k in old}
    return RunAttack({**labels, **found}, windows, len(found), problem)


def with_windows(found: RunAttack, results: Sequence[EvalResult], score_many: ScoreMany,
                 prompts: Mapping[str, str]) -> RunAttack:
    """`found` with the window scores its stored rows lack (rows stored before m008), from a
    Prompt Guard pass over their `prompts`; as it was when none is missing."""
    missing = [k for k in found.missing_windows(results) if k in prompts]
    if not missing:
        return found
    extra = window_scores(score_many, {k: prompts[k] for k in missing})
    return replace(found, windows={**found.windows, **extra})


def window_scores(score_many: ScoreMany, prompts: Mapping[str, str], *,
                  batch: int = WINDOW_BATCH) -> dict[str, tuple[float, ...]]:
    """row id -> the score of each 512-token window of its prompt; a prompt Prompt Guard
    refuses (too long) is left out, as the run stored no score for it."""
    ids = list(prompts)
    found: dict[str, tuple[float, ...]] = {}
    for start in range(0, len(ids), batch):
        part = ids[start:start + batch]
        try:
            scores: list[TextScore | None] = list(score_many([prompts[i] for i in part]))
        except GuardError:
            scores = []
            for i in part:  # one refused text spoils the call: the others one by one
                try:
                    scores.append(score_many([prompts[i]])[0])
                except GuardError:
                    scores.append(None)
        for row_id, score in zip(part, scores, strict=True):
            if score is not None:
                found[row_id] = tuple(score.window_scores)
    return found


def messages_of(results: Sequence[EvalResult], attack: Mapping[str, bool],
                windows: Windows | None = None) -> tuple[list[ScoredMessage], int]:
    """(the scored messages with an attack label, how many labelled ones have no score)."""
    messages, unscored = [], 0
    for r in results:
        if r.row_id not in attack:
            continue
        if r.p_malicious is None:
            unscored += 1
            continue
        messages.append(ScoredMessage(r.row_id, attack[r.row_id], float(r.p_malicious),
                                      tuple((windows or {}).get(r.row_id, ()))))
    return messages, unscored


def run_attack_report(run: EvalRun, results: Sequence[EvalResult], attack: Mapping[str, bool],
                      windows: Windows | None = None, *,
                      threshold: float = DEFAULT_THRESHOLD,
                      target_fprs: Sequence[float] = TARGET_FPRS) -> AttackReport | None:
    """The run's Prompt Guard figures against `attack`; None when no row has an attack label
    or the run did not run Prompt Guard."""
    if not attack or not run.settings.prompt_guard_model:
        return None
    messages, unscored = messages_of(results, attack, windows)
    return attack_report(messages, model=run.settings.prompt_guard_model, threshold=threshold,
                         target_fprs=target_fprs, unscored=unscored,
                         source=f"the attack column of {Path(run.settings.dataset).name}")


def report_rows(report: AttackReport) -> list[list[str]]:
    """[metric, value] rows for a table: the message level, then the window level."""
    rows = [["prompt_guard_attack model", report.model or "-"],
            ["prompt_guard_attack threshold", f"{report.threshold:g}"]]
    for level in (report.messages, report.windows):
        if level is None:
            continue
        data: dict[str, Any] = level.to_json()
        for key in ("n", "malicious", "benign", "precision", "recall", "f1", "fpr", "roc_auc",
                    "auprc", "recall_at_1pct_fpr", "tp", "fp", "fn", "tn"):
            rows.append([f"prompt_guard_attack {level.level} {key}", table_value(data[key])])
        for s in level.suggestions:
            rows.append([f"prompt_guard_attack {level.level} threshold for FPR <= {s.value:g}",
                         f"{s.threshold:.4f} (precision {s.precision:.4f}, recall "
                         f"{s.recall:.4f}, FPR {s.fpr:.4f})"])
    rows.append(["prompt_guard_attack messages over several windows",
                 f"{report.multi_window} of {report.windows_known}" if report.windows_known
                 else "- (window scores not known)"])
    if report.unscored:
        rows.append(["prompt_guard_attack unscored messages", str(report.unscored)])
    return rows


def table_value(value: Any) -> str:
    """A figure as a report table cell: '-' when unknown, counts as they are, rates to 4 places."""
    if value is None:
        return "-"
    if isinstance(value, bool | int):
        return str(value)
    return f"{float(value):.4f}"
