"""Errors raised by the guard engine. Each message tells a person what to do next."""


class GuardError(Exception):
    """Base class: anything the engine refuses, with a message fit to show a person."""


class InvalidConversation(GuardError):
    """The conversation breaks a rule of the Llama Guard prompt format."""


class InvalidImage(GuardError):
    """An attached file is not an image we can decode safely."""


class InvalidCategories(GuardError):
    """Excluded or custom categories do not fit the model's taxonomy."""


class TooLarge(GuardError):
    """A request is larger than a limit of `guard.core.limits` allows; refused before any model work."""


class ContextTooLong(GuardError):
    """The rendered prompt does not fit the model's context window."""


class ModelLoadError(GuardError):
    """A model could not be loaded (missing token, gated repo, no network, bad folder)."""


class DatasetError(GuardError):
    """A dataset file cannot be read at all: missing, not text, not the format named, no column."""


class AdapterMismatch(ModelLoadError):
    """A LoRA adapter tuned on another base model than the one loaded."""
