"""Errors of batch evaluation. Each message tells a person what to do next."""

from __future__ import annotations

from ..errors import GuardError


class EvalError(GuardError):
    """Base class: an evaluation that cannot start or go on."""


class DatasetError(EvalError):
    """A dataset file cannot be read at all: missing, not text, not the format named, no column."""
