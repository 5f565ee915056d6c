"""Errors raised by the labels package. Each message tells a person what to do next."""


class LabelsError(Exception):
    """Base class: anything the label store refuses, with a message fit to show a person."""


class InvalidLabel(LabelsError):
    """A label is missing a field, names an unknown category or breaks a limit."""


class InvalidExample(LabelsError):
    """An example cannot be stored as given (missing model output, bad policy)."""


class NotFound(LabelsError):
    """No example or label with that id (or it was deleted)."""


class ImportFailed(LabelsError):
    """An import file is not a Guard Lab export; nothing was written."""
