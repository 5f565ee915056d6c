"""Batch evaluation: read a dataset, run both guards over it into a stored run, report metrics.

    python -m guard.eval DATA --format xstest --out guard_lab.db --report report.json

Importing the package is cheap: the runner loads no model, and torch comes with the models.
"""

from .errors import DatasetError, EvalError
from .readers import FORMATS, MODERATION_TO_CODES, BadRow, Dataset, Row, read_dataset
from .report import Comparison, EvalReport, build_report, compare, format_comparison, format_report
from .runner import RunOutcome, conversation_for, evaluate_dataset, run_settings

__all__ = [
    "FORMATS", "MODERATION_TO_CODES", "BadRow", "Comparison", "Dataset", "DatasetError",
    "EvalError", "EvalReport", "Row", "RunOutcome", "build_report", "compare",
    "conversation_for", "evaluate_dataset", "format_comparison", "format_report",
    "read_dataset", "run_settings",
]
