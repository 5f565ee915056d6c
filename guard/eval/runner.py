"""Run Llama Guard and Prompt Guard over a dataset in batches, storing each batch as it ends.

The runner takes loaded models and a `labels.runs.Runs`; it draws no progress bar itself but
calls `progress(done, total)` after every stored batch (the CLI feeds tqdm, the app gr.Progress).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from guard.core import limits
from guard.core.conversation import Conversation
from guard.core.datasets import BadRow, Dataset, Row, conversation_for
from guard.core.errors import GuardError
from guard.eval.errors import EvalError
from labels.runs import EvalResult, EvalRun, Runs, RunSettings

if TYPE_CHECKING:  # the service imports torch; the runner itself does not need it
    from guard.engines.prompt_guard import PromptGuard
    from guard.engines.service import Guards

ProgressHook = Callable[[int, int], None]
# judge(batch, guards, excluded, threshold) -> results: `judge` below, or the app's GPU call.
Judge = Callable[[Sequence[tuple[int, "Row"]], "Guards", Sequence[str], float], list[EvalResult]]
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class RunOutcome:
    run: EvalRun
    resumed: bool
    judged: int  # rows judged by this call
    skipped: int  # rows found already stored (a resumed run)
    failed: int  # rows stored with an error instead of a verdict
    bad_rows: tuple[BadRow, ...]
    seconds: float


def run_settings(dataset: Dataset, guards: Guards, *, name: str | None = None,
                 excluded: Iterable[str] = (), threshold: float = 0.5) -> RunSettings:
    """The settings of a run, with the category codes checked and normalised by the model."""
    if guards.llama_guard is None:
        raise EvalError("Llama Guard is not loaded; an evaluation needs it.")
    if not 0.0 <= threshold <= 1.0:
        raise EvalError(f"The threshold must be between 0 and 1, got {threshold}.")
    # Planning a throwaway conversation raises InvalidCategories for unknown codes up front.
    checked = guards.llama_guard.plan(conversation_for(Row("-", 0, "x")), excluded).excluded
    pg_name = guards.prompt_guard.name if guards.prompt_guard is not None else ""
    settings = RunSettings(
        name="", dataset=dataset.path, dataset_sha256=dataset.sha256, format=dataset.format,
        model=guards.llama_guard.name, prompt_guard_model=pg_name, excluded=tuple(checked),
        threshold=float(threshold))
    return replace(settings, name=name or default_run_name(settings))


def default_run_name(settings: RunSettings) -> str:
    """Readable and fixed by the settings, so repeating a command resumes its run."""
    stem = settings.dataset.replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0]
    model = settings.model.rstrip("/").rsplit("/", 1)[-1]
    pg = settings.prompt_guard_model.rstrip("/").rsplit("/", 1)[-1] or "no-prompt-guard"
    excluded = ",".join(settings.excluded) or "none"
    return (f"{stem} {settings.dataset_sha256[:8]} {model} {pg} exclude={excluded} "
            f"threshold={settings.threshold:g}")


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size outside 1 to `limits.MAX_EVAL_BATCH_SIZE`, with a message."""
    if batch_size < 1:
        raise EvalError(f"The batch size must be 1 or more, got {batch_size}.")
    if batch_size > limits.MAX_EVAL_BATCH_SIZE:
        raise EvalError(
            f"The batch size must be at most {limits.MAX_EVAL_BATCH_SIZE}, got {batch_size}: a "
            "larger batch only holds more rows in memory, since the model's passes are cut to "
            f"its token budget anyway. Use {limits.MAX_EVAL_BATCH_SIZE} or less.")


def evaluate_dataset(dataset: Dataset, guards: Guards, runs: Runs, *, name: str | None = None,
                     excluded: Iterable[str] = (), threshold: float = 0.5,
                     batch_size: int = DEFAULT_BATCH_SIZE, limit: int | None = None,
                     progress: ProgressHook | None = None,
                     judge_batch: Judge | None = None) -> RunOutcome:
    """Judge the rows of `dataset` not yet stored under the run `name`; store them batch by batch.

    `judge_batch` judges one batch (default: `judge` below, in this process); the app passes its
    GPU call, so the label store and the progress bar stay in the server process.

    Rows are judged shortest first, so a batch pads its prompts to lengths that are alike; the
    order is fixed by the data, so a resumed run forms the same batches an uninterrupted one would.
    """
    check_batch_size(batch_size)
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be 1 or more, got {limit}.")
    started = time.perf_counter()
    settings = run_settings(dataset, guards, name=name, excluded=excluded, threshold=threshold)
    rows = dataset.rows[:limit] if limit is not None else dataset.rows
    run, resumed = runs.start(settings, len(rows))
    done = runs.done_row_ids(run.id)
    todo = sorted((p for p in enumerate(rows) if p[1].row_id not in done),
                  key=lambda p: (p[1].size, p[0]))
    finished = len(rows) - len(todo)
    if progress is not None:
        progress(finished, len(rows))
    failed = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        results = (judge_batch or judge)(batch, guards, settings.excluded, settings.threshold)
        runs.save_results(run.id, results)
        failed += sum(r.error is not None for r in results)
        finished += len(batch)
        if progress is not None:
            progress(finished, len(rows))
    run = runs.finish(run.id)
    return RunOutcome(run, resumed, len(todo), len(rows) - len(todo), failed, dataset.bad_rows,
                      time.perf_counter() - started)


def judge(batch: Sequence[tuple[int, Row]], guards: Guards, excluded: Sequence[str],
          threshold: float) -> list[EvalResult]:
    """Both models over one batch: one Llama Guard generation, one Prompt Guard pass."""
    assert guards.llama_guard is not None
    rows = [row for _, row in batch]
    # A row that is no valid conversation (too long, say) is stored with its error.
    built = [_conversation_or_error(row) for row in rows]
    conversations = [c for c in built if isinstance(c, Conversation)]
    verdicts: list = list(built)
    if conversations:
        try:
            judged = iter(guards.llama_guard.classify_batch(
                conversations, excluded, threshold=threshold, batch_size=len(conversations)))
            verdicts = [next(judged) if isinstance(c, Conversation) else c for c in built]
        except GuardError:
            # One row (too long, say) spoils the batch: judge them one by one to keep the others.
            verdicts = [_one(guards, c, excluded, threshold) if isinstance(c, Conversation) else c
                        for c in built]
    scores: list[float | None] = [None] * len(rows)
    if guards.prompt_guard is not None:
        # Prompt Guard looks for attacks in what goes into a model: the prompt, not the answer.
        scores = _prompt_guard_scores(guards.prompt_guard, [r.prompt for r in rows])
    results = []
    for (position, row), verdict, p_malicious in zip(batch, verdicts, scores, strict=True):
        common = {"row_id": row.row_id, "position": position, "gold": row.gold,
                  "gold_categories": row.categories, "p_malicious": p_malicious}
        if isinstance(verdict, GuardError):
            results.append(EvalResult(verdict=None, p_unsafe=None, categories=(), raw_output="",
                                      error=str(verdict), **common))
        else:
            results.append(EvalResult(verdict=verdict.verdict, p_unsafe=verdict.p_unsafe,
                                      categories=verdict.category_codes,
                                      raw_output=verdict.raw_output, **common))
    return results


def _conversation_or_error(row: Row) -> Conversation | GuardError:
    try:
        return conversation_for(row)
    except GuardError as exc:
        return exc


def _prompt_guard_scores(prompt_guard: PromptGuard, prompts: list[str]) -> list[float | None]:
    """Scores of the prompts; None for a prompt Prompt Guard refuses (too long)."""
    try:
        return [s.p_malicious for s in prompt_guard.score_many(prompts)]
    except GuardError:
        scores: list[float | None] = []
        for prompt in prompts:
            try:
                scores.append(prompt_guard.score(prompt).p_malicious)
            except GuardError:
                scores.append(None)
        return scores


def _one(guards: Guards, conversation: Conversation, excluded: Sequence[str], threshold: float):
    try:
        return guards.llama_guard.classify(conversation, excluded, threshold=threshold)
    except GuardError as exc:
        return exc
