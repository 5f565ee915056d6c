"""Run Llama Guard and Prompt Guard over a dataset in batches, storing finished rows as it goes.

The runner takes loaded models and a `labels.runs.Runs`; it draws no progress bar itself but
calls `progress(done, total)` after every write (the CLI feeds tqdm, the app gr.Progress).

A model in this process judges one batch at a time, and each batch is stored as it ends. An
engine that sends requests to a server (the OpenAI engine) is a pipeline instead: several batches
are judged at once by lanes (threads), enough to keep twice its window of requests queued, while
the calling thread stores the finished rows, all that finished within `FLUSH_S` in one
transaction. Either way a kill at any moment loses no stored row (each write is one transaction)
and duplicates none (a run's row is stored once, and a resumed run skips the stored rows); the
rows in flight when it came are judged again on resume.

A server that stays unreachable or overloaded past the engine's retries (`ServerUnavailable`)
stops the run, keeping what was stored: storing every remaining row as an error would not be an
evaluation. Any other error of one row is stored as that row's error.
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from guard.core import limits
from guard.core.conversation import Conversation
from guard.core.datasets import BadRow, Dataset, Row, conversation_for
from guard.core.errors import GuardError
from guard.core.prompt_guard_text import TextScore
from guard.engines.openai_engine import OpenAIGuard, ServerUnavailable
from guard.eval.errors import EvalError
from labels.runs import EvalResult, EvalRun, Runs, RunSettings

if TYPE_CHECKING:  # the service imports torch; the runner itself does not need it
    from guard.engines.prompt_guard import PromptGuard
    from guard.engines.service import Guards

ProgressHook = Callable[[int, int], None]
# judge(batch, guards, excluded, threshold) -> results: `judge` below, or the app's GPU call.
Judge = Callable[[Sequence[tuple[int, "Row"]], "Guards", Sequence[str], float], list[EvalResult]]
DEFAULT_BATCH_SIZE = 16
FLUSH_S = 0.25  # a pipelined run stores what finished at least this often, in one transaction
FLUSH_ROWS = 1024  # ... and sooner when this many rows are waiting
# One batch of a local model at a time, also when lanes share Prompt Guard (a server engine).
_LOCAL_MODEL = threading.Lock()


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
    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    lanes = lanes_for(guards.llama_guard, batch_size)
    # A local model's batches are stored one by one, as they end; a pipeline's together.
    flush_rows = batch_size if lanes == 1 else max(FLUSH_ROWS, batch_size)
    counts = {"finished": len(rows) - len(todo), "failed": 0}
    waiting: list[EvalResult] = []
    last_write = time.monotonic()

    def write() -> None:
        nonlocal waiting, last_write
        last_write = time.monotonic()
        if not waiting:
            return
        ready, waiting = waiting, []
        runs.save_results(run.id, ready)  # one transaction
        counts["failed"] += sum(r.error is not None for r in ready)
        counts["finished"] += len(ready)
        if progress is not None:
            progress(counts["finished"], len(rows))

    if progress is not None:
        progress(counts["finished"], len(rows))
    judge_one = judge_batch or judge
    with _judged(batches, judge_one, guards, settings, lanes) as judged:
        try:
            for results in judged:
                waiting.extend(results)
                if len(waiting) >= flush_rows or time.monotonic() - last_write >= FLUSH_S:
                    write()
        except ServerUnavailable as exc:
            write()
            raise ServerUnavailable(
                f"{exc} The {counts['finished']:,} of {len(rows):,} rows judged so far are "
                "stored; the same command again resumes the run.") from None
        except BaseException:
            write()  # keep every row judged before the stop (or the kill signal)
            raise
        write()
    run = runs.finish(run.id)
    return RunOutcome(run, resumed, len(todo), len(rows) - len(todo), counts["failed"],
                      dataset.bad_rows, time.perf_counter() - started)


def lanes_for(engine: Any, batch_size: int) -> int:
    """Batches judged at once: 1 for a model in this process; for a server engine, enough to
    keep twice its window (`concurrency`) of requests queued, so that a lane waiting for the
    last answer of its batch leaves the window full."""
    if not isinstance(engine, OpenAIGuard):
        return 1
    return max(2, min(2 * engine.concurrency, math.ceil(2 * engine.concurrency / batch_size)))


_LANE_DONE = object()


@contextmanager
def _judged(batches: Sequence[Sequence[tuple[int, Row]]], judge_one: Judge, guards: Guards,
            settings: RunSettings, lanes: int) -> Iterator[Iterator[list[EvalResult]]]:
    """The results of each batch as they finish; with lanes > 1, from that many threads, and an
    empty list every FLUSH_S while none finishes (so the caller stores on time)."""
    if lanes == 1:
        yield (judge_one(batch, guards, settings.excluded, settings.threshold)
               for batch in batches)
        return
    source = iter(batches)
    source_lock = threading.Lock()
    finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()

    def lane() -> None:
        while not stop.is_set():
            with source_lock:
                batch = next(source, None)
            if batch is None:
                break
            try:
                finished.put(judge_one(batch, guards, settings.excluded, settings.threshold))
            except BaseException as exc:  # handed to the caller's thread, which raises it
                stop.set()
                finished.put(exc)
                return
        finished.put(_LANE_DONE)

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(lane,),
                                name=f"guard-eval-lane-{i}", daemon=True)
               for i in range(min(lanes, len(batches)))]

    def results() -> Iterator[list[EvalResult]]:
        running = len(threads)
        while running:
            try:
                item = finished.get(timeout=FLUSH_S)
            except queue.Empty:
                yield []
                continue
            if item is _LANE_DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item

    for thread in threads:
        thread.start()
    try:
        yield results()
    finally:
        # On an error the other lanes end their batch and stop (their rows are judged again on
        # resume); they are daemons, so a hung server cannot hold the process at exit.
        stop.set()


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
        except ServerUnavailable:
            raise
        except GuardError:
            # One row (too long, say) spoils the batch: judge them one by one to keep the others.
            verdicts = [_one(guards, c, excluded, threshold) if isinstance(c, Conversation) else c
                        for c in built]
    scores: list[TextScore | None] = [None] * len(rows)
    if guards.prompt_guard is not None:
        # Prompt Guard looks for attacks in what goes into a model: the prompt, not the answer.
        with _LOCAL_MODEL:
            scores = prompt_guard_text_scores(guards.prompt_guard, [r.prompt for r in rows])
    results = []
    for (position, row), verdict, score in zip(batch, verdicts, scores, strict=True):
        # The row's attack label and, for a labelled row, its windows' scores are stored with
        # the run, so its window-level figures need neither the dataset nor a second pass.
        windows = tuple(score.window_scores) if score is not None and row.attack is not None \
            else ()
        common = {"row_id": row.row_id, "position": position, "gold": row.gold,
                  "gold_categories": row.categories,
                  "p_malicious": None if score is None else score.p_malicious,
                  "attack": row.attack, "window_scores": windows}
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


def prompt_guard_scores(prompt_guard: PromptGuard, prompts: list[str]) -> list[float | None]:
    """Scores of the prompts; None for a prompt Prompt Guard refuses (too long)."""
    return [None if s is None else s.p_malicious
            for s in prompt_guard_text_scores(prompt_guard, prompts)]


def prompt_guard_text_scores(prompt_guard: PromptGuard, prompts: list[str]
                             ) -> list[TextScore | None]:
    """Each prompt's score with its windows' (one pass: the served score is their maximum);
    None for a prompt Prompt Guard refuses (too long)."""
    try:
        return list(prompt_guard.score_many(prompts))
    except GuardError:
        scores: list[TextScore | None] = []
        for prompt in prompts:
            try:
                scores.append(prompt_guard.score(prompt))
            except GuardError:
                scores.append(None)
        return scores


def _one(guards: Guards, conversation: Conversation, excluded: Sequence[str], threshold: float):
    try:
        return guards.llama_guard.classify(conversation, excluded, threshold=threshold)
    except ServerUnavailable:
        raise
    except GuardError as exc:
        return exc
