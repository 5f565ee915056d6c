"""The edge where the packages' errors become messages on the page (and in API errors)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import gradio as gr

from guard.errors import GuardError
from labels.errors import LabelsError


def guarded(fn: Callable) -> Callable:
    """Turn GuardError and LabelsError into gr.Error, whose message the person sees."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (GuardError, LabelsError) as exc:
            raise gr.Error(str(exc)) from None
    return wrapper
