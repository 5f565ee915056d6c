"""Errors of batch evaluation. Each message tells a person what to do next."""

from __future__ import annotations

from guard.core.errors import DatasetError, GuardError

__all__ = ["DatasetError", "EvalError"]  # DatasetError lives with the readers, in guard.core


class EvalError(GuardError):
    """Base class: an evaluation that cannot start or go on."""
