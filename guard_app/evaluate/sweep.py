"""Batch evaluation's policies: a policy and its category variants over a dataset (each a stored
run, one GPU call per batch for all of them), "save this variant as a policy", and thresholds
for a target FPR or recall with what they cost. Gradio-free."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from guard.core.datasets import Dataset, Row
from guard.core.policy import Policy, ad_hoc
from guard.engines.service import Guards
from guard.eval.errors import EvalError
from guard.eval.report import report_at
from guard.eval.runner import ProgressHook, RunOutcome
from guard.eval.sweep import SweepRow, VariantJudge, judge_variants, sweep_dataset, sweep_table
from guard.eval.sweep import variants as sweep_variants
from guard.eval.thresholds import Suggestion, show_threshold, suggest
from guard_app import gpu
from labels.runs import EvalResult, Runs

SWEEP_HEADERS = ["variant", "n", "precision", "recall", "F1", "FPR", "Δ recall", "Δ FPR",
                 "verdicts changed", "policy", "run"]


def plain_policy(policy: Policy) -> dict[str, Any]:
    return {"policy": policy.to_json(), "ad_hoc": policy.ad_hoc}


def policy_of(data: dict[str, Any]) -> Policy:
    return replace(Policy.from_json(data["policy"]), ad_hoc=bool(data["ad_hoc"]))


def _judge_s(slot: int, items: list[dict[str, Any]], *args: Any, **kwargs: Any) -> int:
    return int(min(gpu.MAX_DURATION_S, 20 + len(items)))


@gpu.on_gpu(_judge_s)
def judge_call(slot: int, items: list[dict[str, Any]], policies: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """One batch of (variant, row) pairs, plain data in and out (guard.eval.sweep)."""
    todo = [(item["variant"], item["position"], Row(**item["row"])) for item in items]
    found = [policy_of(p) for p in policies]
    loaded = gpu.models(slot)
    guards = policy_guards(loaded.guards, loaded.prompt_guards, found[0])
    return [asdict(r) for r in judge_variants(todo, guards, found)]


def policy_guards(guards: Guards, choices: Any, policy: Policy) -> Guards:
    """The models a dataset run under `policy` uses: its Prompt Guard model among the page's
    choices ("none": no Prompt Guard), the loaded one when that model is not offered here; the
    loaded ones for the tab's own settings (no policy). The variants of a sweep share it."""
    if policy.ad_hoc:
        return guards
    if policy.prompt_guard.model == "none":
        return Guards(guards.llama_guard, None)
    if policy.prompt_guard.model in getattr(choices, "sources", {}):
        return Guards(guards.llama_guard, choices.get(policy.prompt_guard.model))
    return guards


def gpu_judge(slot: int) -> VariantJudge:
    def judge(todo: Sequence[tuple[int, int, Row]], guards: Guards,
              policies: Sequence[Policy]) -> list[EvalResult]:
        items = [{"variant": i, "position": p, "row": asdict(row)} for i, p, row in todo]
        return [EvalResult(**r) for r in judge_call(slot, items,
                                                    [plain_policy(p) for p in policies])]
    return judge


def run_sweep(dataset: Dataset, guards: Guards, runs: Runs, base: Policy, *, name: str | None,
              leave_out: bool, alone: bool, batch_size: int, limit: int | None,
              progress: ProgressHook | None = None, judge: VariantJudge | None = None
              ) -> tuple[list[SweepRow], list[Any]]:
    """The policy and its variants over `dataset`, each a stored run: one table row each, and
    the variants (guard.eval.sweep.Variant)."""
    found = sweep_variants(base, sweep=leave_out, only_one=alone)
    outcome = sweep_dataset(dataset, guards, runs, found, name=name, batch_size=batch_size,
                            limit=limit, progress=progress, judge=judge)
    return sweep_table(outcome, runs), found


def base_policy(chosen: Policy | None, excluded: Sequence[str], threshold: float,
                family: Any) -> Policy:
    """The picked policy, or the tab's categories and threshold as an unrecorded one."""
    return chosen if chosen is not None else ad_hoc(tuple(excluded), threshold, family)


def chosen_policy(book: Any, choice: str | None) -> Policy | None:
    """The policy the tab's picker names; no choice at all (an API caller that sent none)
    means the server's default policy, "(the settings below)" the tab's own settings."""
    from guard_app import policy_picker as picker

    if not choice:
        return None if book is None else book.default
    return picker.picked(book, choice)


def tab_note(policy: Policy, excluded: Sequence[str], threshold: float) -> str:
    """What a run under `policy` says when the tab's categories or threshold differ from it."""
    if policy.ad_hoc:
        return (f"No policy: the tab's own settings decided the verdicts (excluded "
                f"{', '.join(policy.excluded) or 'none'}, threshold {policy.threshold:g}), and "
                "the run records no policy.")
    said = f"Policy {policy.label} decided the verdicts, and the run records it."
    differ = [what for what, same in (
        ("categories", sorted(excluded) == sorted(policy.excluded)),
        ("threshold", float(threshold) == policy.threshold)) if not same]
    if differ:
        said += (f" The tab's {' and '.join(differ)} differ from the policy's and were not "
                 "used: pick the policy again to see its settings, or pick \"(the settings "
                 "below)\" to run the tab's own.")
    return said


def run_policy(dataset: Dataset, guards: Guards, runs: Runs, policy: Policy, *,
               name: str | None, batch_size: int, limit: int | None,
               progress: ProgressHook | None = None, judge: VariantJudge | None = None
               ) -> RunOutcome:
    """A plain run of Batch evaluation under a saved policy: one stored run whose verdicts are
    the policy's decisions (as the sweep stores them), recording name@version."""
    outcome = sweep_dataset(dataset, guards, runs, sweep_variants(policy, sweep=False),
                            name=name, batch_size=batch_size, limit=limit, progress=progress,
                            judge=judge)
    done = outcome.runs[0]
    failed = sum(r.error is not None for r in runs.results(done.run.id))
    return RunOutcome(done.run, done.resumed, done.judged, done.skipped, failed,
                                dataset.bad_rows, outcome.seconds)


def sweep_rows(table: Sequence[SweepRow]) -> list[list[str]]:
    def cell(value: float | None) -> str:
        return "-" if value is None or value != value else f"{value:.3f}"

    base = table[0].report.metrics if table else None
    rows = []
    for r in table:
        m = r.report.metrics
        rows.append([r.variant, str(m.n), cell(m.precision), cell(m.recall), cell(m.f1),
                     cell(m.false_positive_rate), f"{m.recall - base.recall:+.3f}",
                     f"{m.false_positive_rate - base.false_positive_rate:+.3f}", str(r.changed),
                     r.policy, r.run])
    return rows


def variant_choices(table: Sequence[SweepRow]) -> list[str]:
    return [r.variant for r in table[1:]]


def variant_policies(found: Sequence[Any]) -> dict[str, Any]:
    """What "save this variant" needs of the last sweep, as plain data for the page's state."""
    return {v.name: plain_policy(v.policy) for v in found}


def save_variant(book: Any, saved: dict[str, Any] | None, variant: str | None, name: str | None,
                 *, by: str = "") -> Any:
    """"Save this variant as a policy": the variant's policy under `name` (default its own)."""
    if not saved or not variant or variant not in saved:
        raise EvalError("Sweep the categories first, then pick the variant to save.")
    policy = policy_of(saved[variant])
    body = {**policy.to_json(), "name": (name or "").strip() or policy.name}
    body.pop("version", None)
    return book.save(Policy.from_json(body, source="The variant"), by=by)


def stored_suggestion(runs: Runs, name: str | None, target: str, value: Any) -> Suggestion:
    """A threshold for the stored run `name` (its stored scores; no model runs)."""
    from guard_app.evaluate import logic as view

    run = view.stored_run(runs, name)
    report = report_at(run, runs.results(run.id))
    measured = [r for r in report.results if r.gold is not None and r.p_unsafe is not None]
    try:
        return suggest([bool(r.gold) for r in measured], [float(r.p_unsafe) for r in measured],
                       target, float(value))
    except (TypeError, ValueError) as exc:
        message = str(exc) if not isinstance(exc, TypeError) and "could not convert" not in \
            str(exc) else f"Type the target {target} as a number from 0 to 1, e.g. 0.05."
        raise EvalError(message) from None


def suggestion_html(found: Suggestion, run: str) -> str:
    warnings = "".join(f'<div class="gl-warning">{html.escape(w)}</div>' for w in found.warnings)
    return (f'<div class="gl-note" id="gl-eval-suggestion">Run A (<b>{html.escape(run)}</b>): '
            f"{html.escape(found.sentence)}{warnings}</div>")


def typed_threshold(text: Any) -> float:
    """A threshold typed in the box (Enter applies it)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise EvalError(f"Type a threshold from 0 to 1, e.g. 0.003; got {text!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise EvalError(f"The threshold must be from 0 to 1, got {show_threshold(value)}.")
    return value
