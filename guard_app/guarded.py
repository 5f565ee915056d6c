"""The edge where the packages' errors become messages on the page (and in API errors).

Expected refusals (GuardError, LabelsError) reach the visitor as their own message and leave
one line in the log, no traceback. Anything else is a bug: the log gets the traceback once and
the visitor one sentence, instead of Gradio's generic "The upstream Gradio app has raised an
exception". Messages are HTML-escaped, since Gradio renders error toasts as HTML and these
messages can quote what a visitor typed or what the database holds.
"""

from __future__ import annotations

import errno
import functools
import html
import logging
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from guard.core.errors import GuardError
from labels.errors import LabelsError

log = logging.getLogger("guard_lab")
UNEXPECTED = ("Something went wrong on the server while doing this; it has been logged. Try "
              "again, and if it happens again, reload the page.")


# Faults of the server's disk, not of the code: the person is told plainly (nothing was saved,
# what to do) instead of "Something went wrong". The label store turns its own into
# labels.store.DatabaseFault; these are the ones that reach here from anywhere else.
DISK_FULL = ("The server's disk is full, so this was not saved (nothing saved before is lost). "
             "Try again once space is freed; tell the server's operator if it lasts.")
READ_ONLY = ("The server cannot write this: its storage is read-only, so nothing was saved. "
             "Tell the server's operator.")
_SQLITE_FULL, _SQLITE_READONLY = 13, 8


def plain_refusal(exc: BaseException) -> str | None:
    """The plain message for a fault that is not a bug (a full or read-only disk, text that
    cannot be encoded), or None for any other error."""
    if isinstance(exc, UnicodeEncodeError) and "surrogate" in exc.reason:
        # Whatever field it came in (a name, a note, a search): guard.core refuses it in
        # conversations and datasets with its place; anywhere else it is this.
        return (f"Something you sent holds U+{ord(exc.object[exc.start]):04X}, a lone UTF-16 "
                "surrogate: half of a character, not text, so it cannot be stored or judged. "
                "Remove it and try again.")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DISK_FULL
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return READ_ONLY
    code = getattr(exc, "sqlite_errorcode", None)  # sqlite3.Error, without importing it
    if isinstance(code, int):
        return {_SQLITE_FULL: DISK_FULL, _SQLITE_READONLY: READ_ONLY}.get(code & 0xFF)
    return None


def error(message: str) -> gr.Error:
    """A toast that shows `message` as text and prints no traceback in the server log."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


def guarded(fn: Callable) -> Callable:
    """Turn every exception of `fn` into a gr.Error whose message the person can act on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (GuardError, LabelsError) as exc:
            log.info("refused %s: %s", fn.__name__, str(exc)[:300].replace("\n", " "))
            raise error(str(exc)) from None
        except Exception as exc:
            plain = plain_refusal(exc)
            if plain is None:
                log.exception("unexpected error in %s", fn.__name__)
                raise error(UNEXPECTED) from None
            log.warning("refused %s: %s", fn.__name__, exc)
            raise error(plain) from None
    return wrapper


def in_place(fn: Callable, outputs: Sequence[Any]) -> Callable:
    """For the page: a refusal becomes a warning toast next to where the person is looking and
    leaves every output as it was (a raised gr.Error would mark each output "Error")."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (GuardError, LabelsError) as exc:
            log.info("refused %s: %s", fn.__name__, str(exc)[:300].replace("\n", " "))
            gr.Warning(html.escape(str(exc), quote=False))
            return {output: gr.skip() for output in outputs}
    return guarded(wrapper)


def on_page_and_api(event: Callable, fn: Callable, inputs: Sequence[Any],
                    outputs: Sequence[Any], *, api_name: str, **options: Any) -> None:
    """Listen on the page with refusals in place, and serve `api_name` with refusals raised.

    `event` is the page's trigger (e.g. `button.click`). The named endpoint keeps its inputs
    and outputs (gradio_client calls it as before); it hangs on a hidden button, so only API
    clients reach it and they get the error as an exception, as before.
    """
    outputs = list(outputs)
    # The page's listener gets a name of its own, so the endpoint keeps `api_name` (Gradio
    # would otherwise name both after `fn` and suffix the second "_1").
    event(in_place(fn, outputs), list(inputs), outputs, api_name=f"{api_name}_on_page",
          api_visibility="private", **options)
    gr.Button(visible=False, render=True).click(guarded(fn), list(inputs), outputs,
                                                api_name=api_name, **options)
