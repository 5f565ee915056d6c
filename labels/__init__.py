"""Guard Lab's label store: save judged examples with reviewers' labels, measure, export.

Imports neither torch nor gradio, so the storage tests run without a model.
"""

from labels import records
from labels.errors import ImportFailed, InvalidExample, InvalidLabel, LabelsError, NotFound
from labels.filters import ReviewFilter
from labels.prompt_guard import (
           PromptGuardInput,
           PromptGuardLabel,
           PromptGuardRow,
           prompt_guard_rows,
)
from labels.prompt_guard import record_labels as record_prompt_guard_labels
from labels.records import *  # noqa: F403  (each type of records.__all__)
from labels.store import Store, default_db_path

__all__ = ["ImportFailed", "InvalidExample", "InvalidLabel", "LabelsError", "NotFound",
           "ReviewFilter", "Store", "default_db_path",
           # Prompt Guard labels (labels/prompt_guard.py has the rest of that API)
           "PromptGuardInput", "PromptGuardLabel", "PromptGuardRow", "prompt_guard_rows",
           "record_prompt_guard_labels"]
__all__ += records.__all__  # the values the store takes and gives
