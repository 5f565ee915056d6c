"""Guard Lab's label store: save judged examples with reviewers' labels, measure, export.

Imports neither torch nor gradio, so the storage tests run without a model.
"""

from labels.errors import ImportFailed, InvalidExample, InvalidLabel, LabelsError, NotFound
from labels.filters import ReviewFilter
from labels.records import (
                      ExampleFilter,
                      ExampleInput,
                      ExampleSummary,
                      ImageBlob,
                      ImportResult,
                      LabelEvent,
                      LabelInput,
                      MetricInputs,
                      ModelOutput,
                      SavedExample,
                      StoredExample,
                      StoredLabel,
)
from labels.store import Store, default_db_path

__all__ = [
    "ExampleFilter", "ExampleInput", "ExampleSummary", "ImageBlob", "ImportFailed",
    "ImportResult", "InvalidExample", "InvalidLabel", "LabelEvent", "LabelInput", "LabelsError",
    "MetricInputs", "ModelOutput", "NotFound", "ReviewFilter", "SavedExample", "Store",
    "StoredExample",
    "StoredLabel", "default_db_path",
]
