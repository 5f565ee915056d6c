"""Batch evaluation's Prompt Guard figures under a policy: a run a policy decided reports
Prompt Guard at the policy's threshold (its model is the one the run used), and a queue of a
run's Prompt Guard misses starts at that threshold too. Gradio-free.

A run records its policy as name@version (RunSettings.policy): the threshold is that policy's
when this server can read it (saved in its labels database, or its default policy), else
LlamaFirewall's 0.9, as for a run under the tab's own settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.core.datasets import Dataset
from guard.core.policy import Policy
from guard.engines.service import Guards
from guard.eval.errors import EvalError
from guard.eval.prompt_guard_eval import DEFAULT_THRESHOLD, stored_attack, with_windows
from guard.eval.report import EvalReport, report_at
from labels.errors import LabelsError
from labels.runs import EvalResult, EvalRun, Runs, RunSettings

# The Prompt Guard selections of labels.queues.create_from_run, as the page offers them.
QUEUE_CHOICES = [
    ("Prompt Guard's false positives (no attack, scored at or above its threshold)",
     "prompt-guard-false-positives"),
    ("Prompt Guard's false negatives (an attack, scored under its threshold)",
     "prompt-guard-false-negatives")]


def recorded_policy(store: Any, book: Any, settings: RunSettings) -> Policy | None:
    """The policy a run recorded, when this server can read it: the server's default policy
    (a file's draft label too), else a version saved in the labels database; None for a run
    under the tab's own settings or a policy this server does not have."""
    label = (settings.policy or "").strip()
    if not label:
        return None
    default = getattr(book, "default", None)
    if default is not None and default.label == label:
        return default
    if store is None or "@draft-" in label:
        return None
    from labels import policies

    try:
        return policies.get(store, label)
    except LabelsError:
        return None


def run_threshold(store: Any, book: Any, settings: RunSettings) -> float:
    """Prompt Guard's threshold for a stored run: its policy's, else 0.9."""
    policy = recorded_policy(store, book, settings)
    return DEFAULT_THRESHOLD if policy is None else policy.prompt_guard.threshold


def parse_threshold(value: Any, default: float) -> float:
    """A Prompt Guard threshold from the page or the API; empty takes `default`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = float("nan")
    if isinstance(value, bool) or not 0.0 <= threshold <= 1.0:  # also NaN
        raise EvalError(f"The Prompt Guard threshold must be a number from 0 to 1 (empty for "
                        f"the run's policy's, else {DEFAULT_THRESHOLD:g}), got {value!r}.")
    return threshold


def policy_report(dataset: Dataset, guards: Guards, runs: Runs, policy: Policy, run: EvalRun,
                  *, local: bool = True) -> EvalReport:
    """The report of a run `policy` decided, with Prompt Guard's figures against the dataset's
    attack column at the policy's threshold. Rows stored without their window scores (before
    the sweep kept them) get a Prompt Guard pass in this process when `local`, read as the
    policy says (its preprocessing); else they report the message level."""
    results: Sequence[EvalResult] = runs.results(run.id)
    found = stored_attack(runs, run, results, dataset=dataset)
    if local and found.labels and guards.prompt_guard is not None \
            and found.missing_windows(results):
        pg, how = guards.prompt_guard, policy.prompt_guard.preprocessing
        judged = {r.row_id for r in results}
        found = with_windows(found, results,
                             lambda texts: pg.score_many(texts, preprocessing=how),
                             {r.row_id: r.prompt for r in dataset.rows if r.row_id in judged})
    threshold = DEFAULT_THRESHOLD if policy.ad_hoc else policy.prompt_guard.threshold
    return report_at(run, results, attack=found.labels, windows=found.windows,
                     prompt_guard_threshold=threshold)
