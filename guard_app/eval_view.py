"""Batch evaluation for the page: which dataset, run it into a stored run, show the report.

Pure glue over `guard.eval` and `labels.runs`: no gradio here. The tables are lists of rows and
the precision-recall curve a pandas DataFrame, which eval_ui.py hands to gradio components.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from guard.core.categories import Family, categories_for
from guard.core.datasets import Row
from guard.engines.service import Guards
from guard.eval import (
    FORMATS,
    Comparison,
    Dataset,
    EvalError,
    EvalReport,
    RunOutcome,
    build_report,
    compare,
    evaluate_dataset,
    read_dataset,
)
from guard.eval.runner import DEFAULT_BATCH_SIZE, Judge
from labels.runs import EvalResult, Runs

UPLOAD = "upload"
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


def source_choices(builtins: Mapping[str, tuple[str, Path, str]]) -> list[tuple[str, str]]:
    return [("Upload a CSV or JSONL file", UPLOAD)] + [(label, key) for key, (label, _, _)
                                                       in builtins.items()]


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
                 builtins: Mapping[str, tuple[str, Path, str]]) -> Dataset:
    """Read the chosen dataset; the format of a built-in set is fixed."""
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
    if not dataset.rows:
        first = f"; {dataset.bad_rows[0]}" if dataset.bad_rows else ""
        raise EvalError(f"{Path(dataset.path).name} has no usable rows ({len(dataset.bad_rows)} "
                        f"bad{first}). Fix the file and upload it again.")
    outcome = evaluate_dataset(dataset, guards, runs, name=(name or "").strip() or None,
                               excluded=excluded, threshold=threshold, batch_size=batch_size,
                               limit=limit, progress=progress, judge_batch=judge_batch)
    return Evaluation(dataset, outcome, build_report(outcome.run, runs.results(outcome.run.id)))


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
    return (f"{head} {'; '.join(notes)}. The run is stored under its name: press Run again "
            "with the same name and settings to resume it (stored rows are not judged again).")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | int):
        return str(value)
    return f"{float(value):.4f}"


def report_rows(report: EvalReport) -> list[list[str]]:
    data = report.to_json()
    rows = [[key, _value(data[key])] for key in ("n", "precision", "recall", "f1", "fpr", "auprc")]
    rows += [[key, _value(data["confusion_matrix"][key])] for key in ("tp", "fp", "fn", "tn")]
    rows.append(["threshold", _value(data["threshold"])])
    suggested = data.get("suggested_threshold")
    if suggested:
        rows.append([f"threshold for FPR <= {suggested['target_fpr']:g}",
                     _value(suggested["threshold"])])
    pg = data.get("prompt_guard")
    if pg:
        rows += [[f"prompt_guard_{key} (at {pg['threshold']:g})", _value(pg[key])]
                 for key in ("precision", "recall", "fpr", "auprc")]
    return rows


def category_rows(report: EvalReport, family: Family | str = Family.LLAMA_GUARD_4
                  ) -> list[list[str]]:
    if not report.has_categories:
        return []
    names = category_names(family)
    return [[f"{row['code']} {names.get(row['code'], '')}".strip(), str(row["positives"]),
             str(row["negatives"]), _value(row["fnr"]), _value(row["fpr"])]
            for row in report.metrics.to_json()["categories"]]


def curve_frame(report: EvalReport) -> pd.DataFrame:
    return pd.DataFrame([{"recall": p.recall, "precision": p.precision, "threshold": p.threshold}
                         for p in report.curve], columns=["recall", "precision", "threshold"])


def bad_rows(dataset: Dataset) -> list[list[Any]]:
    return [[bad.line, bad.message] for bad in dataset.bad_rows]


def report_json(evaluation: Evaluation) -> dict[str, Any]:
    data = evaluation.report.to_json()
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

    return [[r.metric, _value(r.a), _value(r.b), diff(r.diff)] for r in comparison.rows]


def comparison_text(comparison: Comparison) -> str:
    changed = [r.metric for r in comparison.rows if r.diff not in (None, 0)]
    moved = f"Metrics that differ: {', '.join(changed)}." if changed else "Every metric is equal."
    return (f"A: '{comparison.run_a}' · B: '{comparison.run_b}'. Verdicts differ on "
            f"{comparison.changed_verdicts} of the {comparison.shared_rows} rows both runs "
            f"judged. {moved}")


def gpu_judge(slot: int) -> Judge:
    """Each batch of an evaluation as one GPU call over plain rows (guard_app.gpu.judge).

    The label store and the progress bar stay in the server process, between the calls.
    """
    from guard_app import gpu

    def judge(batch: Sequence[tuple[int, Row]], guards: Guards, excluded: Sequence[str],
              threshold: float) -> list[EvalResult]:
        rows = [{"position": position, "row": asdict(row)} for position, row in batch]
        return [EvalResult(**r) for r in gpu.judge(slot, rows, list(excluded), threshold)]
    return judge
