"""Errors of tuning and of loading adapters. Each message tells a person what to do next."""

from __future__ import annotations

from ..errors import GuardError, ModelLoadError


class TuneError(GuardError):
    """Base class: a tuning run or a before/after comparison that cannot start or go on."""


class NotEnoughLabels(TuneError):
    """Too few usable labelled examples, or too few of one class, to tune and hold some out."""


class AdapterMismatch(ModelLoadError):
    """An adapter tuned on another base model than the one loaded."""
