"""Batch evaluation for the page: which dataset, run it into a stored run, show the report,
then the run row by row: filtered, at any threshold, opened one at a time or sent to review.

Pure glue over `guard.eval`, `labels.runs` and `labels.queues`: no gradio here. The tables are
lists of rows and the precision-recall curve a pandas DataFrame, which tab.py hands to gradio
components. A threshold other than the run's own is applied to the stored p_unsafe
(`guard.eval.report.at_threshold`): the model is never run again for it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from guard.core.categories import Family, categories_for, choices, guess_family
from guard.core.datasets import BadRow, Row, conversation_for
from guard.core.prompt_guard_text import TextScore
from guard.core.verdict import parse_answer
from guard.engines.service import Guards
from guard.eval import (
    FORMATS,
    Comparison,
    Dataset,
    DatasetError,
    EvalError,
    EvalReport,
    RunOutcome,
    build_report,
    compare,
    evaluate_dataset,
    read_dataset,
    run_settings,
)
from guard.eval.prompt_guard_eval import (
    RunAttack,
    ScoreMany,
    run_attack_labels,
    stored_attack,
    table_value,
    with_windows,
)
from guard.eval.prompt_guard_eval import report_rows as attack_rows
from guard.eval.report import report_at
from guard.eval.runner import DEFAULT_BATCH_SIZE, Judge, default_run_name
from guard.eval.thresholds import show_threshold, suggest
from guard_app.evaluate.prompt_guard_runs import QUEUE_CHOICES as PROMPT_GUARD_QUEUE_CHOICES
from labels import queues
from labels.errors import NotFound
from labels.runs import EvalResult, EvalRun, Runs, RunSettings

UPLOAD = "upload"
LABELLED = "labelled"  # the labels database's examples with a final label (labels.labelled_dataset)
LABELLED_CHOICE = ("Labelled examples (final labels; text of one user message and an optional "
                   "answer)")
# The public sets, by the file names under the data folder; absent files are not offered.
BUILTIN: dict[str, tuple[str, str, str]] = {
    "xstest": ("XSTest prompts (450, safe and unsafe look-alikes)", "xstest_prompts.csv",
               "xstest"),
    "openai-moderation": ("OpenAI moderation samples (1,680)",
                          "openai_moderation_samples-1680.jsonl.gz", "openai-moderation"),
}
REPORT_HEADERS = ["metric", "value"]
CATEGORY_HEADERS = ["category", "gold unsafe rows", "gold other rows", "FNR (missed)",
                    "FPR (named wrongly)"]
BAD_ROW_HEADERS = ["line", "problem"]
COMPARE_HEADERS = ["metric", "A", "B", "B - A"]
ROW_HEADERS = ["row", "gold", "verdict", "p_unsafe", "categories", "error", "prompt", "response"]
ALL, FALSE_NEGATIVES, FALSE_POSITIVES, FAILED, CATEGORY, DIFFERS = (
    "all", "false-negatives", "false-positives", "failed", "category", "differs")
SHOW_CHOICES = [("All rows", ALL), ("False negatives (gold unsafe, judged safe)", FALSE_NEGATIVES),
                ("False positives (gold safe, judged unsafe)", FALSE_POSITIVES),
                ("Failed rows (with the error)", FAILED),
                ("Rows with the category (gold or predicted)", CATEGORY),
                ("Rows whose verdict differs from run B", DIFFERS)]
# The selections of labels.queues.create_from_run, as the page offers them.
QUEUE_CHOICES = [("False negatives", "false-negatives"), ("False positives", "false-positives"),
                 ("Failed rows", "failed"), ("Verdict differs from run B", "differs"),
                 ("Uncertain: p_unsafe within the band of the threshold", "uncertain"),
                 *PROMPT_GUARD_QUEUE_CHOICES]
MAX_TABLE_ROWS = 2000  # more rows than a person reads; the note says how many are left out
TEXT_CHARS = 160  # of a prompt or response in the table; an opened row has all of it
ProgressHook = Callable[[int, int], None]


def category_names(family: Family | str = Family.LLAMA_GUARD_4) -> dict[str, str]:
    """{code: card name} of a family's table: codes name different categories across families."""
    return {c.code: c.card_name for c in categories_for(family)}


NAMES = category_names()  # Llama Guard 4's, for callers that know no family


def default_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """GUARD_LAB_DATA_DIR, else the shared data folder beside the repository."""
    if environ.get("GUARD_LAB_DATA_DIR"):
        return Path(environ["GUARD_LAB_DATA_DIR"])
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def builtin_sets(data_dir: str | Path | None) -> dict[str, tuple[str, Path, str]]:
    """{key: (label, path, format)} for the public sets whose files are there."""
    if data_dir is None:
        return {}
    folder = Path(data_dir)
    return {key: (label, folder / name, fmt) for key, (label, name, fmt) in BUILTIN.items()
            if (folder / name).is_file()}


def source_choices(builtins: Mapping[str, tuple[str, Path, str]], labelled: bool = False
                   ) -> list[tuple[str, str]]:
    return [("Upload a CSV or JSONL file", UPLOAD)] + [(label, key) for key, (label, _, _)
                                                       in builtins.items()] + (
        [(LABELLED_CHOICE, LABELLED)] if labelled else [])


def guess_format(path: str | None) -> str | None:
    """The format a file name suggests: .csv is csv, .jsonl / .json / .gz is jsonl."""
    if not path:
        return None
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return None


def pick_dataset(source: str, upload: str | None, fmt: str | None,
                 builtins: Mapping[str, tuple[str, Path, str]], *, store: Any = None,
                 family: Family | str = Family.LLAMA_GUARD_4,
                 hidden: frozenset[int] = frozenset()) -> Dataset:
    """Read the chosen dataset; the format of a built-in set is fixed. The labelled examples
    (with `store`; not the reader's blind ones, `hidden`) are written to a file named by its
    content first, then read as any file."""
    if source == LABELLED and store is not None:
        return labelled_dataset(store, family, hidden)
    if source in builtins:
        _, path, builtin_format = builtins[source]
        return read_dataset(path, builtin_format)
    if source != UPLOAD:
        raise EvalError(f"Unknown dataset choice '{source}'. Upload a file or pick a listed set.")
    if not upload:
        raise EvalError("Upload a dataset file first (CSV or JSONL, one row per prompt), or "
                        "pick a built-in set.")
    if fmt not in FORMATS:
        raise EvalError(f"Pick the file's format: one of {', '.join(FORMATS)}.")
    return read_dataset(upload, fmt)


def labelled_dataset(store: Any, family: Family | str, hidden: frozenset[int] = frozenset()
                     ) -> Dataset:
    """The final-labelled examples of `family` as a dataset; those a row cannot hold (several
    turns, images) are named as one bad row, so the page says how many were left out."""
    from guard.eval.labelled import labelled_examples

    return labelled_examples(store, family, hidden, named=False,
                             what_next="Label such examples first, or upload a dataset file.")


def parse_limit(value: float | str | None) -> int | None:
    if value is None or value == "" or value == 0:
        return None
    try:
        limit = int(float(value))
    except (TypeError, ValueError):
        raise EvalError(f"The row limit must be a whole number, got {value!r}.") from None
    if limit < 0:
        raise EvalError(f"The row limit must be 1 or more (empty for all rows), got {limit}.")
    return limit


def parse_batch_size(value: float | str | None) -> int:
    if value is None or value == "":
        return DEFAULT_BATCH_SIZE
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise EvalError(f"The batch size must be a whole number, got {value!r}.") from None


def parse_threshold(value: float | str | None) -> float:
    """A threshold from the page or the API: a number from 0 to 1, else EvalError."""
    try:
        threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:  # also NaN
        raise EvalError(f"The threshold must be a number from 0 to 1, got {value!r}.")
    return threshold


@dataclass(frozen=True)
class Evaluation:
    dataset: Dataset
    outcome: RunOutcome
    report: EvalReport


def evaluate(dataset: Dataset, guards: Guards, runs: Runs, *, name: str = "",
             excluded: Sequence[str] = (), threshold: float = 0.5,
             batch_size: int = DEFAULT_BATCH_SIZE, limit: int | None = None,
             progress: ProgressHook | None = None, judge_batch: Judge | None = None
             ) -> Evaluation:
    """Judge the rows not stored yet under the run `name`, and report it at `threshold`.

    A stored run that differs from these settings in its threshold alone is resumed at its own
    threshold and reported at this one: its stored scores serve any threshold, so changing only
    the threshold never runs the model again (nor needs a new run name).
    """
    if not dataset.rows:
        first = f"; {dataset.bad_rows[0]}" if dataset.bad_rows else ""
        raise EvalError(f"{Path(dataset.path).name} has no usable rows ({len(dataset.bad_rows)} "
                        f"bad{first}). Fix the file and upload it again.")
    threshold = parse_threshold(threshold)
    name = (name or "").strip() or None
    wanted = run_settings(dataset, guards, name=name, excluded=excluded, threshold=threshold)
    stored = _stored_at_another_threshold(runs, wanted, named=name is not None)
    outcome = evaluate_dataset(
        dataset, guards, runs, name=stored.name if stored else name, excluded=excluded,
        threshold=stored.settings.threshold if stored else threshold, batch_size=batch_size,
        limit=limit, progress=progress, judge_batch=judge_batch)
    results = runs.results(outcome.run.id)
    # The run stores each row's attack label and window scores (migration m008); rows stored
    # before it take the dataset's labels and a Prompt Guard pass, kept for the page below.
    found = stored_attack(runs, outcome.run, results, dataset=dataset)
    scorer = _window_scorer(guards, judge_batch)
    if found.labels and scorer is not None and found.missing_windows(results):
        judged = {r.row_id for r in results}
        found = with_windows(found, results, scorer, {r.row_id: r.prompt for r in dataset.rows
                                                      if r.row_id in judged})
        _remember_windows(outcome.run, found.windows)
    return Evaluation(dataset, outcome, report_at(outcome.run, results, threshold,
                                                  attack=found.labels, windows=found.windows))


# Window scores that runs stored before migration m008 lack, from the pass above, for the
# latest runs this server evaluated, by (run id, dataset hash): the page re-reads the run
# right after evaluating it. Runs stored since keep their own.
_WINDOWS: OrderedDict[tuple[Any, ...], dict[str, tuple[float, ...]]] = OrderedDict()
KEPT_WINDOWS = 8


def _remember_windows(run: EvalRun, windows: dict[str, tuple[float, ...]]) -> None:
    key = _windows_key(run)
    _WINDOWS[key] = windows
    _WINDOWS.move_to_end(key)
    while len(_WINDOWS) > KEPT_WINDOWS:
        _WINDOWS.popitem(last=False)


def _windows_key(run: EvalRun) -> tuple[Any, ...]:
    s = run.settings
    return (run.id, s.name, s.dataset_sha256, s.prompt_guard_model, run.created_at)


def _window_scorer(guards: Guards, judge_batch: Judge | None) -> ScoreMany | None:
    """Prompt Guard's window scores, through the same GPU boundary as the judge (gpu_judge's
    `score_windows`) or in this process; None when Prompt Guard is not loaded."""
    if guards.prompt_guard is None:
        return None
    return getattr(judge_batch, "score_windows", None) or guards.prompt_guard.score_many


def _stored_at_another_threshold(runs: Runs, wanted: RunSettings, *, named: bool
                                 ) -> EvalRun | None:
    """The stored run `wanted` names when they differ in the threshold alone; with no name given,
    the run with the default name of these settings at another threshold."""
    def threshold_only(stored: RunSettings) -> bool:
        return (stored.threshold != wanted.threshold
                and not stored.differences(replace(wanted, threshold=stored.threshold)))

    try:
        run = runs.get(wanted.name)
    except NotFound:
        run = None
    if run is not None or named:
        return run if run is not None and threshold_only(run.settings) else None
    return next((r for r in runs.list() if r.name == default_run_name(r.settings)
                 and threshold_only(r.settings)), None)


def status_text(evaluation: Evaluation) -> str:
    o, report = evaluation.outcome, evaluation.report
    name = o.run.name
    if o.resumed:
        head = (f"Resumed run '{name}': {o.skipped} rows were already stored, {o.judged} judged "
                f"now in {o.seconds:.1f} s.")
    else:
        head = f"Run '{name}': judged {o.judged} rows in {o.seconds:.1f} s."
    notes = [f"{report.labelled} rows measured (with a gold label and a verdict)"]
    if report.unlabelled:
        notes.append(f"{report.unlabelled} without a gold label")
    if o.failed:
        notes.append(f"{o.failed} failed (stored with their error)")
    if evaluation.dataset.bad_rows:
        notes.append(f"{len(evaluation.dataset.bad_rows)} bad rows skipped (listed below)")
    if report.prompt_guard_attack is not None:
        notes.append(report.prompt_guard_attack.sentence.rstrip("."))
    shown, stored = report.run.settings.threshold, o.run.settings.threshold
    if shown != stored:
        notes.append(f"shown at threshold {shown:g} from the stored scores (the run keeps its "
                     f"verdicts at {stored:g}; the model was not run again for it)")
    return (f"{head} {'; '.join(notes)}. The run is stored under its name: press Run again "
            "with the same name and settings to resume it (stored rows are not judged again).")


def _threshold(value: Any) -> str:
    """A threshold with four decimals, or with the digits they would hide (0.00081)."""
    text = table_value(value)
    return text if value is None or float(text) == float(value) else show_threshold(value)


def run_a_status(run: EvalRun) -> str:
    """The status line for a stored run picked as run A: what the report and rows below read."""
    s = run.settings
    policy = s.policy or "none (the tab's own settings)"
    return (f"Run A: '{run.name}' ({run.status}; {run.done_rows} of {run.total_rows} rows "
            f"stored; policy {policy}; stored at threshold {s.threshold:g}). The report, the "
            "rows and a queue below read it; Run evaluation judges the settings above.")


def kept_form(kept: Any, offered: Mapping[str, Sequence[Any]], codes: Sequence[str]
              ) -> dict[str, Any]:
    """The form values kept in the browser that still make sense here (a policy or a dataset
    that is gone, a category the model lacks and a number out of range are left out)."""
    if not isinstance(kept, Mapping):
        return {}
    found: dict[str, Any] = {}
    for key in ("source", "policy"):
        if kept.get(key) in offered.get(key, ()):
            found[key] = kept[key]
    if kept.get("format") in FORMATS:
        found["format"] = kept["format"]
    if kept.get("target") in ("fpr", "recall"):
        found["target"] = kept["target"]
    for key in ("limit", "batch_size"):
        if kept.get(key) is None or isinstance(kept[key], int | float) and kept[key] >= 0:
            found[key] = kept.get(key)
    for key in ("threshold", "target_value"):
        value = kept.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            found[key] = value
    if isinstance(kept.get("categories"), list):
        found["categories"] = [c for c in kept["categories"] if c in codes]
    if isinstance(kept.get("typed"), str):
        found["typed"] = kept["typed"][:32]
    for key in ("leave_out", "alone"):
        if isinstance(kept.get(key), bool):
            found[key] = kept[key]
    return found


def report_rows(report: EvalReport) -> list[list[str]]:
    data = report.to_json()
    rows = [[key, table_value(data[key])] for key in ("n", "precision", "recall", "f1", "fpr", "auprc")]
    rows += [[key, table_value(data["confusion_matrix"][key])] for key in ("tp", "fp", "fn", "tn")]
    rows.append(["threshold", _threshold(data["threshold"])])
    suggested = data.get("suggested_threshold")
    if suggested:
        target = f"{suggested['target_fpr']:g}"
        rows += [[f"threshold for FPR <= {target}", table_value(suggested["threshold"])],
                 [f"precision at the FPR <= {target} threshold", table_value(suggested["precision"])],
                 [f"recall at the FPR <= {target} threshold", table_value(suggested["recall"])]]
        measured = [r for r in report.results if r.gold is not None and r.p_unsafe is not None
                    and r.verdict is not None]
        if measured:  # what the fixed suggestion costs, said as the Suggest button says it
            found = suggest([bool(r.gold) for r in measured],
                            [float(r.p_unsafe) for r in measured], "fpr",
                            suggested["target_fpr"])
            rows += [[f"warning at the FPR <= {target} threshold", w] for w in found.warnings]
    pg = data.get("prompt_guard")
    if pg:
        rows += [[f"prompt_guard_{key} (at {pg['threshold']:g})", table_value(pg[key])]
                 for key in ("precision", "recall", "fpr", "auprc")]
    if report.prompt_guard_attack is not None:  # against the dataset's attack column
        rows += attack_rows(report.prompt_guard_attack)
    return rows


def category_rows(report: EvalReport, family: Family | str = Family.LLAMA_GUARD_4
                  ) -> list[list[str]]:
    if not report.has_categories:
        return []
    names = category_names(family)
    return [[f"{row['code']} {names.get(row['code'], '')}".strip(), str(row["positives"]),
             str(row["negatives"]), table_value(row["fnr"]), table_value(row["fpr"])]
            for row in report.metrics.to_json()["categories"]]


def curve_frame(report: EvalReport) -> pd.DataFrame:
    return pd.DataFrame([{"recall": p.recall, "precision": p.precision, "threshold": p.threshold}
                         for p in report.curve], columns=["recall", "precision", "threshold"])


def bad_rows(dataset: Dataset) -> list[list[Any]]:
    return [[bad.line, bad.message] for bad in dataset.bad_rows]


def names_only(data: dict[str, Any]) -> dict[str, Any]:
    """A report's JSON with the run's dataset as its file name: the stored run keeps the path
    the server read, a caller learns only the name (of the file it uploaded, or a built-in)."""
    run = data.get("run")
    if isinstance(run, dict) and isinstance(run.get("dataset"), str):
        data = {**data, "run": {**run, "dataset": Path(run["dataset"]).name}}
    return data


def attack_scores(data: dict[str, Any], report: EvalReport) -> dict[str, Any]:
    """The report's JSON with the scores behind its Prompt Guard figures: per message with an
    attack label, its label, its served score and its windows' (the first MAX_TABLE_ROWS)."""
    pg = report.prompt_guard_attack
    if pg is None or not isinstance(data.get("prompt_guard_attack"), dict):
        return data
    rows = [{"id": m.row_id, "attack": m.malicious, "p_malicious": m.score,
             "window_scores": list(m.window_scores) or None} for m in pg.rows[:MAX_TABLE_ROWS]]
    return {**data, "prompt_guard_attack": {**data["prompt_guard_attack"], "rows": rows,
                                            "rows_left_out": max(0, len(pg.rows) - len(rows))}}


def report_json(evaluation: Evaluation) -> dict[str, Any]:
    data = attack_scores(names_only(evaluation.report.to_json()), evaluation.report)
    data["bad_rows"] = [{"line": b.line, "message": b.message}
                        for b in evaluation.dataset.bad_rows]
    data["resumed"] = evaluation.outcome.resumed
    data["judged_now"] = evaluation.outcome.judged
    return data


def run_names(runs: Runs) -> list[str]:
    return [run.name for run in runs.list()]


def compare_runs(runs: Runs, name_a: str | None, name_b: str | None) -> Comparison:
    if not name_a or not name_b:
        raise EvalError("Pick two stored runs to compare (run an evaluation first).")
    reports = []
    for name in (name_a, name_b):
        run = runs.get(name)
        reports.append(build_report(run, runs.results(run.id)))
    return compare(*reports)


def comparison_rows(comparison: Comparison) -> list[list[str]]:
    def diff(value: float | None) -> str:
        if value is None:
            return "-"
        if isinstance(value, int):
            return f"{value:+d}"
        return f"{value:+.4f}"

    return [[r.metric, table_value(r.a), table_value(r.b), diff(r.diff)] for r in comparison.rows]


def setting_differences(runs: Runs, name_a: str, name_b: str) -> list[str]:
    """Run B's settings that differ from run A's (RunSettings.differences), as 'what B (A: a)'."""
    a, b = runs.get(name_a).settings, runs.get(name_b).settings
    return [d.replace("(stored: ", "(A: ") for d in a.differences(b)]


def comparison_text(comparison: Comparison, settings: Sequence[str] | None = None) -> str:
    """One paragraph; `settings` (setting_differences) adds which settings differ."""
    changed = [r.metric for r in comparison.rows if r.diff not in (None, 0)]
    moved = f"Metrics that differ: {', '.join(changed)}." if changed else "Every metric is equal."
    differ = ""
    if settings is not None:
        differ = (f" Settings of B that differ from A: {'; '.join(settings)}." if settings
                  else " Both runs have the same settings.")
    policies = ""  # issue 23: which policy decided each run's verdicts
    if comparison.policy_a or comparison.policy_b:
        policies = (f" (policy {comparison.policy_a or 'none'} · "
                    f"{comparison.policy_b or 'none'})")
    return (f"A: '{comparison.run_a}' · B: '{comparison.run_b}'{policies}. Verdicts differ on "
            f"{comparison.changed_verdicts} of the {comparison.shared_rows} rows both runs "
            f"judged. {moved}{differ}")


# A stored run, row by row


def run_family(settings: RunSettings, loaded_model: str = "",
               loaded_family: Family | str | None = None) -> Family:
    """The family of the model a run used: the loaded model's when the run used it, else the one
    its model name suggests (as labels.queues does)."""
    if loaded_family is not None and settings.model == loaded_model:
        return Family(loaded_family)
    return guess_family(settings.model)


def stored_run(runs: Runs, name: str | None) -> EvalRun:
    if not name or not str(name).strip():
        raise EvalError("Pick a stored run (run an evaluation first, or refresh the run list).")
    return runs.get(str(name).strip())


def run_dataset(settings: RunSettings) -> Dataset:
    """The very file a run judged, read again (guard.core.datasets' reader): EvalError when it
    is gone or its content is no longer what the run judged (its dataset_sha256)."""
    try:
        dataset = read_dataset(settings.dataset, settings.format)
    except DatasetError as exc:
        raise EvalError(f"Cannot read the dataset of run '{settings.name}' ({exc}). Upload the "
                        "same file and run it again under the same name to see its texts.") from None
    if dataset.sha256 != settings.dataset_sha256:
        raise EvalError(f"{Path(settings.dataset).name} is no longer the file run "
                        f"'{settings.name}' judged (its content differs).")
    return dataset


@dataclass(frozen=True)
class RunTexts:
    """The shortened prompt and response of each row of a run's dataset, for the table."""

    texts: Mapping[str, tuple[str, str]]  # row id -> (prompt, response)
    bad_rows: tuple[BadRow, ...]
    problem: str = ""  # why there are no texts: the file is gone or changed


def run_texts(settings: RunSettings) -> RunTexts:
    """Read once per file version: moving the threshold or the filter does not read it again."""
    try:
        info = os.stat(settings.dataset)
        return _texts(settings, info.st_mtime_ns, info.st_size)
    except OSError:
        return RunTexts({}, (), f"its dataset file {Path(settings.dataset).name} is gone")
    except EvalError as exc:
        return RunTexts({}, (), str(exc))


@lru_cache(maxsize=4)
def _texts(settings: RunSettings, mtime_ns: int, size: int) -> RunTexts:
    dataset = run_dataset(settings)
    return RunTexts({r.row_id: (shorten(r.prompt), shorten(r.response or ""))
                     for r in dataset.rows}, dataset.bad_rows)


def run_attack(settings: RunSettings) -> dict[str, bool]:
    """The attack labels of a run's dataset, read again (once per file version); {} when the
    file has none, is gone or changed. For runs stored before migration m008: later runs keep
    their labels and window scores (`stored_run_attack`)."""
    try:
        info = os.stat(settings.dataset)
    except OSError:
        return {}
    return _attack(settings, info.st_mtime_ns, info.st_size)


def stored_run_attack(runs: Runs, run: EvalRun, results: Sequence[EvalResult]) -> RunAttack:
    """A stored run's attack labels and window scores: its own, else (rows stored before
    migration m008) its dataset's read again and the window scores this server kept."""
    found = stored_attack(runs, run, results, read=lambda s: (run_attack(s), ""))
    kept = _WINDOWS.get(_windows_key(run))
    return replace(found, windows={**kept, **found.windows}) if kept else found


@lru_cache(maxsize=4)
def _attack(settings: RunSettings, mtime_ns: int, size: int) -> dict[str, bool]:
    return run_attack_labels(settings)[0]


def shorten(text: str, limit: int = TEXT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def other_verdicts(runs: Runs, run: EvalRun, other: str | None) -> dict[str, str]:
    """Run B's stored verdicts by row id, for 'differs': B must have judged the same file."""
    if not other or not str(other).strip():
        raise EvalError("Pick run B (under 'Compare two runs') to see the rows whose verdict "
                        "differs from it.")
    b = runs.get(str(other).strip())
    if b.settings.dataset_sha256 != run.settings.dataset_sha256:
        raise EvalError(f"Runs '{run.name}' and '{b.name}' judged different datasets; pick a "
                        "run B over the same file.")
    return {r.row_id: r.verdict for r in runs.results(b.id) if r.verdict is not None}


def pick_rows(results: Sequence[EvalResult], show: str, code: str | None = None,
              other: Mapping[str, str] | None = None) -> list[EvalResult]:
    """The rows a filter keeps: all, false negatives or positives, failed rows, the rows with a
    gold or predicted category `code`, or those whose verdict differs from `other`'s."""
    if show == ALL:
        return list(results)
    if show == FALSE_NEGATIVES:
        return [r for r in results if r.gold is True and r.verdict == "safe"]
    if show == FALSE_POSITIVES:
        return [r for r in results if r.gold is False and r.verdict == "unsafe"]
    if show == FAILED:
        return [r for r in results if r.error is not None]
    if show == CATEGORY:
        if not code:
            raise EvalError("Pick the category to show the rows of.")
        return [r for r in results if code in r.gold_categories
                or (r.predicted_unsafe and code in r.categories)]
    if show == DIFFERS:
        theirs = other or {}
        return [r for r in results if r.verdict is not None and r.row_id in theirs
                and theirs[r.row_id] != r.verdict]
    raise EvalError(f"Unknown filter {show!r}: use one of {', '.join(k for _, k in SHOW_CHOICES)}.")


def row_cells(result: EvalResult, texts: Mapping[str, tuple[str, str]]) -> list[str]:
    gold = "-" if result.gold is None else "safe" if not result.gold else (
        " ".join(["unsafe", ",".join(result.gold_categories)]).strip())
    prompt, response = texts.get(result.row_id, ("", ""))
    return [result.row_id, gold, verdict_cell(result), table_value(result.p_unsafe),
            ",".join(result.categories) if result.predicted_unsafe else "",
            result.error or "", prompt, response]


def verdict_cell(result: EvalResult) -> str:
    """The decision (the policy's, or at the threshold shown), and the model's own answer
    beside it when they differ: "safe (model: unsafe S1)"."""
    if result.verdict is None:
        return "failed"
    said = parse_answer(result.raw_output)
    if not said.label or said.label == result.verdict:
        return result.verdict
    return f"{result.verdict} (model: {' '.join([said.label, ','.join(said.codes)]).strip()})"


def category_choices(family: Family | str, results: Sequence[EvalResult] = ()
                     ) -> list[tuple[str, str]]:
    """The family's codes with their names, then any other code the run's rows name."""
    offered = choices(family)
    known = {code for _, code in offered}
    extra = sorted({c for r in results for c in (*r.gold_categories, *r.categories)} - known,
                   key=lambda c: (len(c), c))
    return offered + [(code, code) for code in extra]


@dataclass(frozen=True)
class RunView:
    """A stored run at a threshold, through a filter: what the page shows of it."""

    run: EvalRun
    family: Family
    threshold: float
    report: EvalReport  # at `threshold`, over every row
    rows: list[list[str]]
    note: str
    texts: RunTexts
    codes: list[tuple[str, str]]

    def to_json(self) -> dict[str, Any]:
        data = attack_scores(names_only(self.report.to_json()), self.report)
        data["stored_threshold"] = self.run.settings.threshold
        data["bad_rows"] = [{"line": b.line, "message": b.message} for b in self.texts.bad_rows]
        return data


def run_view(runs: Runs, name: str | None, threshold: float | str | None = None,
             show: str | None = ALL, code: str | None = None, other: str | None = None, *,
             loaded_model: str = "", loaded_family: Family | str | None = None,
             prompt_guard_threshold: float | None = None) -> RunView:
    """The stored run `name` at `threshold` (None: its own), its rows through the filter `show`;
    Prompt Guard's figures at `prompt_guard_threshold` (None: 0.9; a policy run's policy's).

    Only stored scores are read: no model runs and no run is stored.
    """
    run = stored_run(runs, name)
    t = run.settings.threshold if threshold is None or threshold == "" else parse_threshold(
        threshold)
    results = runs.results(run.id)
    found = stored_run_attack(runs, run, results)
    report = report_at(run, results, t, attack=found.labels, windows=found.windows,
                       prompt_guard_threshold=prompt_guard_threshold)
    theirs = other_verdicts(runs, run, other) if show == DIFFERS else None
    picked = pick_rows(report.results, show or ALL, code or None, theirs)
    texts = run_texts(run.settings)
    family = run_family(run.settings, loaded_model, loaded_family)
    what = dict((k, label) for label, k in SHOW_CHOICES)[show or ALL].lower()
    note = (f"Run '{run.name}' ({run.settings.model}, {family.label}) at threshold {t:g}"
            f"{'' if t == run.settings.threshold else f' (stored at {run.settings.threshold:g})'}"
            f": {len(picked)} of {len(report.results)} rows ({what}).")
    if len(picked) > MAX_TABLE_ROWS:
        note += f" The table shows the first {MAX_TABLE_ROWS:,}."
    if texts.problem:
        note += f" No texts: {texts.problem}."
    return RunView(run, family, t, report,
                   [row_cells(r, texts.texts) for r in picked[:MAX_TABLE_ROWS]], note, texts,
                   category_choices(family, report.results))


def open_row(runs: Runs, name: str | None, row_id: str | int | None,
             threshold: float | str | None = None, *, loaded_model: str = "",
             loaded_family: Family | str | None = None) -> dict[str, Any]:
    """One row of a stored run as the Moderate view loads it: its conversation (read again from
    the run's dataset) and the stored answer, read at `threshold` (None: the run's own)."""
    run = stored_run(runs, name)
    wanted = "" if row_id is None else str(row_id).strip()
    if not wanted:
        raise EvalError("Pick a row of the run (its id, the table's first column).")
    t = run.settings.threshold if threshold is None or threshold == "" else parse_threshold(
        threshold)
    found = [r for r in report_at(run, runs.results(run.id), t).results if r.row_id == wanted]
    if not found:
        raise EvalError(f"Run '{run.name}' has no row '{wanted}'.")
    row = next((r for r in run_dataset(run.settings).rows if r.row_id == wanted), None)
    if row is None:
        raise EvalError(f"Row '{wanted}' is not in the dataset of run '{run.name}'.")
    result = found[0]
    return {"messages": conversation_for(row).to_messages(),
            "family": run_family(run.settings, loaded_model, loaded_family).value,
            "model": run.settings.model, "verdict": result.verdict,
            "categories": list(result.categories), "p_unsafe": result.p_unsafe, "threshold": t,
            "raw_output": result.raw_output, "error": result.error,
            "source": f"run {run.name} row {wanted}"}


def parse_overlap(value: float | str | None) -> int:
    try:
        overlap = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        overlap = float("nan")
    if not overlap.is_integer():
        raise EvalError(f"Reviewers per item must be a whole number such as 1, got {value!r}.")
    return int(overlap)


def make_queue(store: Any, name: str | None, run: str | None, select: str | None,
               other: str | None = None, band: float | str | None = None,
               overlap: float | str | None = 1, *, family: Family | str | None = None,
               prompt_guard_threshold: float | None = None) -> queues.QueueFill:
    """A review queue of a stored run's rows (labels.queues.create_from_run), picked by the
    run's stored verdicts; "uncertain" takes the rows within `band` of its stored threshold;
    Prompt Guard's misses are read at `prompt_guard_threshold` (None: 0.9)."""
    if not name or not name.strip():
        raise EvalError("Name the queue (reviewers pick it by that name).")
    found = stored_run(Runs(store), run)
    if select not in queues.SELECTIONS:
        raise EvalError(f"Pick which rows to queue: one of {', '.join(queues.SELECTIONS)}.")
    options: dict[str, Any] = {}
    if select == "differs":
        if not other or not str(other).strip():
            raise EvalError("Pick run B (under 'Compare two runs') to queue the rows whose "
                            "verdict differs from it.")
        options["other_run"] = str(other).strip()
    if select == "uncertain":
        try:
            options["band"] = float(band)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise EvalError(f"The band must be a number such as 0.1, got {band!r}.") from None
    if select in queues.PROMPT_GUARD_SELECTIONS and prompt_guard_threshold is not None:
        options["threshold"] = float(prompt_guard_threshold)
    return queues.create_from_run(
        store, name.strip(), found.name, select, overlap=parse_overlap(overlap),
        family=None if family is None else Family(family).value, **options)


def gpu_judge(slot: int) -> Judge:
    """Each batch of an evaluation as one GPU call over plain rows (guard_app.gpu.judge).

    The label store and the progress bar stay in the server process, between the calls.
    """
    from guard_app import gpu

    def judge(batch: Sequence[tuple[int, Row]], guards: Guards, excluded: Sequence[str],
              threshold: float) -> list[EvalResult]:
        rows = [{"position": position, "row": asdict(row)} for position, row in batch]
        return [EvalResult(**r) for r in gpu.judge(slot, rows, list(excluded), threshold)]

    def score_windows(texts: list[str]) -> list[TextScore]:
        return [TextScore.from_json(s) for s in gpu.score_prompts(slot, list(texts))]

    judge.score_windows = score_windows  # type: ignore[attr-defined]  # see _window_scorer
    return judge
