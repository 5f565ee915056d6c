"""Errors of tuning. Each message tells a person what to do next."""

from __future__ import annotations

from guard.core.errors import AdapterMismatch, GuardError

__all__ = ["AdapterMismatch", "NotEnoughLabels", "TuneError"]  # AdapterMismatch: guard.core


class TuneError(GuardError):
    """Base class: a tuning run or a before/after comparison that cannot start or go on."""


class NotEnoughLabels(TuneError):
    """Too few usable labelled examples, or too few of one class, to tune and hold some out."""
