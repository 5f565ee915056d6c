"""A policy over a dataset, and its category sweep: each variant a stored, resumable run.

The variants are the policy itself, then the policy with each enabled category left out (and,
with `only_one`, each category alone). Every batch of rows is judged for all the variants that
still need it in one `classify_batch` call (the prompts differ only in their category lists),
Prompt Guard scores each row once, and each variant's results are stored as its own run, one
transaction per batch. Run again after an interruption, it judges only the (variant, row) pairs
not yet stored. The stored verdict is the policy's decision (guard.core.policy.Policy.decide);
the stored answer text and categories are what the model said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from guard.core import limits
from guard.core.categories import categories_for
from guard.core.conversation import Conversation
from guard.core.datasets import Dataset, Row, conversation_for
from guard.core.errors import GuardError, TooLarge
from guard.core.policy import Policy
from guard.eval.errors import EvalError
from guard.eval.report import EvalReport, build_report
from guard.eval.runner import (
    DEFAULT_BATCH_SIZE,
    ProgressHook,
    check_batch_size,
    prompt_guard_text_scores,
    run_settings,
)
from labels.runs import EvalResult, EvalRun, Runs

if TYPE_CHECKING:
    from guard.engines.service import Guards

POLICY = "policy"  # the name of the first variant: the policy as given
# judge(todo, guards, policies) -> results: `judge_variants` below, or the app's GPU call.
VariantJudge = Callable[[Sequence[tuple[int, int, Row]], "Guards", Sequence[Policy]],
                        list[EvalResult]]


@dataclass(frozen=True)
class Variant:
    name: str  # "policy", "without S6", "only S6"
    policy: Policy


@dataclass(frozen=True)
class VariantRun:
    variant: Variant
    run: EvalRun
    resumed: bool
    judged: int  # (this variant's) rows judged by this call
    skipped: int  # rows found already stored


@dataclass(frozen=True)
class SweepOutcome:
    runs: tuple[VariantRun, ...]
    conversations_judged: int  # (variant, row) pairs judged by this call
    seconds: float


def variants(policy: Policy, *, sweep: bool = True, only_one: bool = False) -> list[Variant]:
    """The policy, then (with `sweep`) each enabled category left out, then each alone."""
    found = [Variant(POLICY, policy)]
    if not sweep:
        return found
    fixed = [c.code for c in categories_for(policy.family) if c.code not in policy.excluded]
    if len(fixed) + len(policy.custom) > 1:  # leaving out the only category enforces nothing
        found += [Variant(f"without {code}", policy.without(code)) for code in fixed]
    if only_one:
        found += [Variant(f"only {code}", policy.only(code)) for code in fixed]
    if len(found) > limits.MAX_VARIANTS:
        raise TooLarge(f"This sweep has {len(found)} variants; at most {limits.MAX_VARIANTS} "
                       "run at once. Exclude some categories in the policy first.")
    return found


def run_name(base: str | None, dataset: Dataset, guards: Guards, variant: Variant) -> str:
    """Fixed by the settings, so the same command resumes the same runs."""
    if base:
        return base if variant.name == POLICY else f"{base} [{variant.name}]"
    stem = dataset.path.replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0]
    model = guards.llama_guard.name.rstrip("/").rsplit("/", 1)[-1]
    pg = guards.prompt_guard.name.rstrip("/").rsplit("/", 1)[-1] if guards.prompt_guard \
        else "no-prompt-guard"
    policy = variant.policy.recorded or (
        f"exclude={','.join(variant.policy.excluded) or 'none'} "
        f"threshold={variant.policy.threshold:g}")
    return f"{stem} {dataset.sha256[:8]} {model} {pg} policy={policy}"


def sweep_dataset(dataset: Dataset, guards: Guards, runs: Runs, found: Sequence[Variant], *,
                  name: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  limit: int | None = None, progress: ProgressHook | None = None,
                  judge: VariantJudge | None = None) -> SweepOutcome:
    """Judge every variant over the rows of `dataset` not yet stored in its run (`judge`:
    `judge_variants` in this process, or the app's GPU call)."""
    check_batch_size(batch_size)
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be 1 or more, got {limit}.")
    if guards.llama_guard is None:
        raise EvalError("Llama Guard is not loaded; an evaluation needs it.")
    for variant in found:
        if not variant.policy.ad_hoc:
            variant.policy.check_family(guards.llama_guard.family)
    started = time.perf_counter()
    rows = dataset.rows[:limit] if limit is not None else dataset.rows
    opened = []
    for variant in found:
        settings = run_settings(dataset, guards, name=run_name(name, dataset, guards, variant),
                                excluded=variant.policy.excluded,
                                threshold=variant.policy.threshold)
        settings = replace(settings, policy=variant.policy.recorded or "")
        run, resumed = runs.start(settings, len(rows))
        opened.append((variant, run, resumed, runs.done_row_ids(run.id)))
    order = sorted(enumerate(rows), key=lambda p: (p[1].size, p[0]))
    total = len(rows) * len(found)
    ids = {r.row_id for r in rows}
    finished = sum(len(done & ids) for *_, done in opened)
    if progress is not None:
        progress(finished, total)
    judged = [0] * len(found)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        todo = [(i, position, row) for position, row in batch
                for i, (*_, done) in enumerate(opened) if row.row_id not in done]
        if not todo:
            continue
        results = (judge or judge_variants)(todo, guards, [v.policy for v, *_ in opened])
        for i, (_, run, _, _) in enumerate(opened):
            mine = [r for (j, _, _), r in zip(todo, results, strict=True) if j == i]
            if mine:
                runs.save_results(run.id, mine)
                judged[i] += len(mine)
        finished += len(todo)
        if progress is not None:
            progress(finished, total)
    done_runs = tuple(
        VariantRun(variant, runs.finish(run.id), resumed, judged[i], len(rows) - judged[i])
        for i, (variant, run, resumed, _) in enumerate(opened))
    return SweepOutcome(done_runs, sum(judged), time.perf_counter() - started)


def judge_variants(todo: Sequence[tuple[int, int, Row]], guards: Guards,
                   policies: Sequence[Policy]) -> list[EvalResult]:
    """(variant index, position, row) triples, judged in one Llama Guard batch; results in order.

    The variants of one sweep share the threshold and custom categories; only the excluded
    codes differ, item by item."""
    assert guards.llama_guard is not None
    built: dict[str, Conversation | GuardError] = {}
    for _, _, row in todo:
        if row.row_id not in built:
            try:
                built[row.row_id] = conversation_for(row)
            except GuardError as exc:
                built[row.row_id] = exc
    good = [(i, row) for i, _, row in todo if isinstance(built[row.row_id], Conversation)]
    first = policies[0]
    verdicts: dict[int, Any] = {}
    if good:
        conversations = [built[row.row_id] for _, row in good]
        per_item = [policies[i].excluded for i, _ in good]
        try:
            answers = guards.llama_guard.classify_batch(
                conversations, threshold=first.threshold, custom=first.custom,
                batch_size=len(conversations), excluded_per_item=per_item)
        except GuardError:  # one row spoils the batch: judge them one by one to keep the others
            answers = [_one(guards, c, policies[i]) for (i, _), c in zip(good, conversations,
                                                                          strict=True)]
        positions = [k for k, (_, _, row) in enumerate(todo)
                     if isinstance(built[row.row_id], Conversation)]
        verdicts = dict(zip(positions, answers, strict=True))
    scores: dict[str, Any] = {}  # row id -> its TextScore (None: refused)
    if guards.prompt_guard is not None:
        distinct = list(dict.fromkeys(row.row_id for _, _, row in todo))
        prompts = {row.row_id: row.prompt for _, _, row in todo}
        reader = _Reading(guards.prompt_guard, first.prompt_guard.preprocessing)
        scores = dict(zip(distinct, prompt_guard_text_scores(reader,
                                                             [prompts[r] for r in distinct]),
                          strict=True))
    results = []
    for k, (i, position, row) in enumerate(todo):
        outcome = verdicts.get(k, built[row.row_id])
        score = scores.get(row.row_id)
        # As the runner stores them (m008): the attack label and, for a labelled row, the
        # score of each window, so a policy run's window figures need no second pass.
        windows = tuple(score.window_scores) if score is not None and row.attack is not None \
            else ()
        results.append(decided(policies[i], outcome, position, row,
                               None if score is None else score.p_malicious, windows))
    return results


class _Reading:
    """Prompt Guard reading each text as the policy says (`prompt_guard.preprocessing`), for
    `prompt_guard_scores`: the variants of a sweep share their Prompt Guard settings."""

    def __init__(self, prompt_guard: Any, preprocessing: str) -> None:
        self.prompt_guard, self.preprocessing = prompt_guard, preprocessing

    def score_many(self, texts: Sequence[str]) -> Any:
        return self.prompt_guard.score_many(texts, preprocessing=self.preprocessing)

    def score(self, text: str) -> Any:
        return self.prompt_guard.score(text, preprocessing=self.preprocessing)


def _one(guards: Guards, conversation: Conversation, policy: Policy) -> Any:
    try:
        return guards.llama_guard.classify(conversation, policy.excluded,
                                           threshold=policy.threshold, custom=policy.custom)
    except GuardError as exc:
        return exc


def decided(policy: Policy, verdict: Any, position: int, row: Row,
            p_malicious: float | None, windows: tuple[float, ...] = ()) -> EvalResult:
    """The stored result: the policy's decision as the verdict, the model's answer beside it."""
    common = {"row_id": row.row_id, "position": position, "gold": row.gold,
              "gold_categories": row.categories, "p_malicious": p_malicious,
              "attack": row.attack, "window_scores": windows}
    if isinstance(verdict, GuardError):
        return EvalResult(verdict=None, p_unsafe=None, categories=(), raw_output="",
                          error=str(verdict), **common)
    decision = policy.decide({
        "verdict": verdict.verdict, "p_unsafe": verdict.p_unsafe,
        "model_label": verdict.model_label,
        "categories": [{"code": c} for c in verdict.category_codes],
        "excluded_codes": list(verdict.excluded_codes),
        "prompt_guard": None if p_malicious is None else {"max_p_malicious": p_malicious}})
    return EvalResult(verdict=decision.verdict, p_unsafe=verdict.p_unsafe,
                      categories=verdict.category_codes, raw_output=verdict.raw_output, **common)


@dataclass(frozen=True)
class SweepRow:
    variant: str
    policy: str  # name@version (or @draft-...)
    run: str
    report: EvalReport
    changed: int  # rows whose verdict differs from the policy's run

    def to_json(self) -> dict[str, Any]:
        m = self.report.metrics
        return {"variant": self.variant, "policy": self.policy, "run": self.run,
                "n": m.n, "precision": m.precision, "recall": m.recall, "f1": m.f1,
                "fpr": m.false_positive_rate, "changed_verdicts": self.changed,
                "failed": self.report.failed}


def sweep_table(outcome: SweepOutcome, runs: Runs) -> list[SweepRow]:
    """One row per variant, its metrics and how many verdicts differ from the policy's."""
    out, reference = [], None
    for vr in outcome.runs:
        results = runs.results(vr.run.id)
        verdicts = {r.row_id: r.verdict for r in results if r.verdict is not None}
        if reference is None:
            reference = verdicts
        changed = sum(reference.get(k) not in (None, v) for k, v in verdicts.items())
        out.append(SweepRow(vr.variant.name, vr.variant.policy.label, vr.run.name,
                            build_report(vr.run, results), changed))
    return out


def format_table(rows: Sequence[SweepRow]) -> str:
    """The variants side by side, with the change against the policy's own run."""
    def cell(value: float | None) -> str:
        return "-" if value is None or value != value else f"{value:.3f}"

    base = rows[0].report.metrics if rows else None
    width = max([len(r.variant) for r in rows] + [7])
    lines = [f"{'variant':<{width}} {'n':>5} {'prec':>6} {'recall':>6} {'f1':>6} {'fpr':>6} "
             f"{'Δrecall':>8} {'Δfpr':>7} {'changed':>7}  policy"]
    for r in rows:
        m = r.report.metrics
        d_recall = m.recall - base.recall if base is not None else None
        d_fpr = m.false_positive_rate - base.false_positive_rate if base is not None else None
        lines.append(f"{r.variant:<{width}} {m.n:>5} {cell(m.precision):>6} {cell(m.recall):>6} "
                     f"{cell(m.f1):>6} {cell(m.false_positive_rate):>6} "
                     f"{_signed(d_recall):>8} {_signed(d_fpr):>7} {r.changed:>7}  {r.policy}")
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:+.3f}"
