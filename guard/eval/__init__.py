"""Batch evaluation: read a dataset, run both guards over it into a stored run, report metrics.

    python -m guard.eval DATA --format xstest --out guard_lab.db --report report.json

Importing the package is cheap: the runner loads no model, and torch comes with the models.
"""

from guard.core.datasets import (
                      FORMATS,
                      MODERATION_TO_CODES,
                      BadRow,
                      Dataset,
                      Row,
                      conversation_for,
                      read_dataset,
)
from guard.eval.errors import DatasetError, EvalError
from guard.eval.report import (
                      Comparison,
                      EvalReport,
                      build_report,
                      compare,
                      format_comparison,
                      format_report,
)
from guard.eval.runner import RunOutcome, evaluate_dataset, run_settings

__all__ = [
    "FORMATS", "MODERATION_TO_CODES", "BadRow", "Comparison", "Dataset", "DatasetError",
    "EvalError", "EvalReport", "Row", "RunOutcome", "build_report", "compare",
    "conversation_for", "evaluate_dataset", "format_comparison", "format_report",
    "read_dataset", "run_settings",
]
