"""Guard Lab's label store: save judged examples with reviewers' labels, measure, export.

Imports neither torch nor gradio, so the storage tests run without a model.
"""

from .errors import ImportFailed, InvalidExample, InvalidLabel, LabelsError, NotFound
from .records import (
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
from .store import Store, default_db_path

__all__ = [
    "ExampleFilter", "ExampleInput", "ExampleSummary", "ImageBlob", "ImportFailed",
    "ImportResult", "InvalidExample", "InvalidLabel", "LabelEvent", "LabelInput", "LabelsError",
    "MetricInputs", "ModelOutput", "NotFound", "SavedExample", "Store", "StoredExample",
    "StoredLabel", "default_db_path",
]
