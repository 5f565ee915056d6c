"""Before and after, on the same rows: the held-out labels judged by the base and by the tuned
model, stored as two evaluation runs, compared with `guard.eval.report.compare`, and the rows
whose verdict changed listed each way. A reference set (XSTest, say) judged the same way
reports what the adapter broke outside the team's own data.

The held-out rows are the stored conversations themselves, each with its own excluded and
custom categories, judged through `guard.eval.runner.evaluate_dataset` with a judge that looks
them up by example id; their gold is the reviewers' current labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.core.datasets import Dataset, Row
from guard.core.errors import GuardError
from guard.core.prompts import CustomCategory
from guard.engines.adapter import (
    AdaptedLlamaGuard,
    AdapterInfo,
    carries_adapter,
    load_adapter,
    read_adapter,
)
from guard.engines.llama_guard import LlamaGuard
from guard.eval.report import Comparison, EvalReport, build_report, compare, format_comparison
from guard.eval.runner import DEFAULT_BATCH_SIZE, Judge, ProgressHook, evaluate_dataset
from guard.tune.data import DATABASE, data_sha256, example_from_stored
from guard.tune.errors import TuneError
from labels.errors import NotFound
from labels.records import StoredExample
from labels.runs import EvalResult, Runs
from labels.store import Store

HELD_OUT_FORMAT = "guard-lab-held-out"


@dataclass(frozen=True)
class Flip:
    """A row whose verdict changed between the base and the tuned model."""

    row_id: str
    text: str
    gold: bool | None
    before: str
    after: str
    p_before: float | None
    p_after: float | None

    @property
    def direction(self) -> str:
        return f"{self.before} -> {self.after}"

    @property
    def fixed(self) -> bool:
        return self.gold is not None and (self.after == "unsafe") == self.gold

    @property
    def broke(self) -> bool:
        return self.gold is not None and (self.before == "unsafe") == self.gold


@dataclass(frozen=True)
class RunPair:
    """One set of rows judged by both models."""

    base: EvalReport
    tuned: EvalReport
    comparison: Comparison
    flips: tuple[Flip, ...]

    @property
    def fixed(self) -> tuple[Flip, ...]:
        return tuple(f for f in self.flips if f.fixed)

    @property
    def broke(self) -> tuple[Flip, ...]:
        return tuple(f for f in self.flips if f.broke)

    def to_json(self) -> dict[str, Any]:
        return {**self.comparison.to_json(),
                "flips": [{"id": f.row_id, "text": f.text, "gold": _word(f.gold),
                           "before": f.before, "after": f.after, "p_before": f.p_before,
                           "p_after": f.p_after, "fixed": f.fixed, "broke": f.broke}
                          for f in self.flips]}


@dataclass(frozen=True)
class BeforeAfter:
    adapter: AdapterInfo
    held_out: RunPair
    reference: RunPair | None
    dropped: tuple[str, ...]  # held-out ids no longer usable (deleted, unlabelled, disputed)
    tuned: AdaptedLlamaGuard

    def to_json(self) -> dict[str, Any]:
        return {"adapter": self.adapter.label, "tuned_model": self.tuned.name,
                "held_out": self.held_out.to_json(), "dropped": list(self.dropped),
                "reference": None if self.reference is None else self.reference.to_json()}


def _word(gold: bool | None) -> str | None:
    return None if gold is None else ("unsafe" if gold else "safe")


def held_out_rows(store: Store, info: AdapterInfo
                  ) -> tuple[Dataset, dict[str, StoredExample], tuple[str, ...]]:
    """The adapter's held-out examples as a dataset, their stored conversations by id, and the
    ids left out because they are no longer usable."""
    data = info.metadata.get("data", {})
    if data.get("source") != DATABASE:
        raise TuneError(
            f"The adapter {info.label} was tuned from an export file, which holds rendered "
            "prompts, not conversations; its held-out loss is in guard_lab_adapter.json. Tune "
            "from the database (--db) to compare verdicts.")
    examples, rows, dropped, found = {}, [], [], []
    for example_id in data.get("eval_ids", []):
        try:
            stored = store.get_example(int(example_id))
        except (NotFound, ValueError):
            dropped.append(example_id)
            continue
        try:
            example = example_from_stored(stored)
        except GuardError:
            example = None
        if example is None:
            dropped.append(example_id)
            continue
        examples[example_id] = stored
        found.append(example)
        rows.append(Row(example_id, len(rows) + 1, example.preview, gold=example.unsafe,
                        categories=example.categories))
    if not rows:
        raise TuneError(f"None of the {len(data.get('eval_ids', []))} held-out examples of "
                        f"{info.label} is in {store.path} with an agreed label. Compare against "
                        "the database the adapter was tuned on.")
    dataset = Dataset(f"{store.path}#held-out:{info.label}", HELD_OUT_FORMAT,
                      data_sha256(found), tuple(rows), ())
    return dataset, examples, tuple(dropped)


def stored_judge(examples: dict[str, StoredExample]) -> Judge:
    """Judge each row as its example was judged: its conversation, images and policy."""

    def judge_batch(batch: Sequence[tuple[int, Row]], guards: Any, excluded: Sequence[str],
                    threshold: float) -> list[EvalResult]:
        engine = guards.llama_guard
        groups: dict[tuple[Any, ...], list[int]] = {}
        for n, (_, row) in enumerate(batch):
            custom = tuple(CustomCategory(c["name"], c.get("description", ""))
                           for c in examples[row.row_id].custom)
            groups.setdefault(custom, []).append(n)
        verdicts: list[Any] = [None] * len(batch)
        for custom, members in groups.items():
            stored = [examples[batch[n][1].row_id] for n in members]
            try:
                judged = engine.classify_batch(
                    [s.conversation for s in stored], threshold=threshold, custom=custom,
                    excluded_per_item=[s.excluded for s in stored], batch_size=len(stored))
            except GuardError:  # one row spoils the batch: judge them one by one
                judged = [_one(engine, s, custom, threshold) for s in stored]
            for n, verdict in zip(members, judged, strict=True):
                verdicts[n] = verdict
        results = []
        for (position, row), verdict in zip(batch, verdicts, strict=True):
            common = {"row_id": row.row_id, "position": position, "gold": row.gold,
                      "gold_categories": row.categories, "p_malicious": None}
            if isinstance(verdict, GuardError):
                results.append(EvalResult(verdict=None, p_unsafe=None, categories=(),
                                          raw_output="", error=str(verdict), **common))
            else:
                results.append(EvalResult(verdict=verdict.verdict, p_unsafe=verdict.p_unsafe,
                                          categories=verdict.category_codes,
                                          raw_output=verdict.raw_output, **common))
        return results

    return judge_batch


def _one(engine: Any, stored: StoredExample, custom: tuple[CustomCategory, ...],
         threshold: float) -> Any:
    try:
        return engine.classify(stored.conversation, stored.excluded, threshold=threshold,
                               custom=custom)
    except GuardError as exc:
        return exc


def flips(base: EvalReport, tuned: EvalReport, texts: dict[str, str]) -> tuple[Flip, ...]:
    """Rows judged by both whose verdict differs, in dataset order."""
    after = {r.row_id: r for r in tuned.results if r.verdict is not None}
    out = []
    for r in base.results:
        other = after.get(r.row_id)
        if r.verdict is None or other is None or other.verdict == r.verdict:
            continue
        out.append(Flip(r.row_id, texts.get(r.row_id, ""), r.gold, r.verdict, other.verdict,
                        r.p_unsafe, other.p_unsafe))
    return tuple(out)


def compare_adapter(guard: LlamaGuard, adapter_dir: str | Path, store: Store, *,
                    reference: Dataset | None = None, threshold: float = 0.5,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    progress: ProgressHook | None = None) -> BeforeAfter:
    """Judge the held-out rows (and `reference`) with the base `guard`, then load the adapter
    and judge them again; each of the four passes is a stored run that a repeat resumes.

    `guard` must be the base: the adapter goes into its model (see `load_adapter`), so it
    judges as the tuned model afterwards.
    """
    from guard.engines.service import Guards

    info = read_adapter(adapter_dir)
    if carries_adapter(guard):
        raise TuneError(f"{guard.name} already carries an adapter; load the base model.")
    runs = Runs(store)
    dataset, examples, dropped = held_out_rows(store, info)
    texts = {row.row_id: row.prompt for row in dataset.rows}
    ref_texts = {} if reference is None else {r.row_id: r.prompt for r in reference.rows}
    ref_stem = "" if reference is None else Path(reference.path).name

    def run(model: LlamaGuard, which: str) -> tuple[EvalReport, EvalReport | None]:
        outcome = evaluate_dataset(dataset, Guards(model), runs, threshold=threshold,
                                   name=f"{info.label} held-out: {which}",
                                   batch_size=batch_size, progress=progress,
                                   judge_batch=stored_judge(examples))
        held = build_report(outcome.run, runs.results(outcome.run.id))
        if reference is None:
            return held, None
        outcome = evaluate_dataset(reference, Guards(model), runs, threshold=threshold,
                                   name=f"{info.label} reference {ref_stem}: {which}",
                                   batch_size=batch_size, progress=progress)
        return held, build_report(outcome.run, runs.results(outcome.run.id))

    base_held, base_ref = run(guard, "base")  # before the adapter changes the model
    tuned = load_adapter(guard, info.path)
    tuned_held, tuned_ref = run(tuned, "tuned")
    held_pair = RunPair(base_held, tuned_held, compare(base_held, tuned_held),
                        flips(base_held, tuned_held, texts))
    ref_pair = None
    if base_ref is not None and tuned_ref is not None:
        ref_pair = RunPair(base_ref, tuned_ref, compare(base_ref, tuned_ref),
                           flips(base_ref, tuned_ref, ref_texts))
    return BeforeAfter(info, held_pair, ref_pair, dropped, tuned)


def format_flips(pair: RunPair, title: str) -> str:
    lines = [f"{title}: {len(pair.flips)} verdicts changed "
             f"({len(pair.fixed)} fixed, {len(pair.broke)} broken)"]
    for direction in ("safe -> unsafe", "unsafe -> safe"):
        chosen = [f for f in pair.flips if f.direction == direction]
        if not chosen:
            continue
        lines.append(f"  {direction}: {len(chosen)}")
        for f in chosen:
            mark = "fixed" if f.fixed else "BROKE" if f.broke else "changed"
            lines.append(f"    [{mark}] #{f.row_id} gold={_word(f.gold) or '-'} "
                         f"p {_p(f.p_before)} -> {_p(f.p_after)}  {f.text[:80]}")
    return "\n".join(lines)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_before_after(result: BeforeAfter) -> str:
    parts = [f"adapter {result.adapter.label}: held-out rows, A = base, B = tuned",
             format_comparison(result.held_out.comparison),
             format_flips(result.held_out, "held-out")]
    if result.dropped:
        parts.append(f"left out: {len(result.dropped)} held-out examples no longer usable "
                     f"({', '.join(result.dropped[:10])})")
    broke = f"regression check: {len(result.held_out.broke)} held-out row(s)"
    if result.reference is not None:
        parts += ["reference set, A = base, B = tuned",
                  format_comparison(result.reference.comparison),
                  format_flips(result.reference, "reference")]
        broke += f" and {len(result.reference.broke)} reference row(s)"
    parts.append(broke + " that the base got right are wrong with the adapter")
    return "\n\n".join(parts)
