"""The edge the command lines share: what a command raises becomes one line and an exit status.

`python -m guard`, `guard.eval` and `guard.tune` run their work through `run_command`. The
errors of packages `guard` may not import (labels.errors.LabelsError) are passed in.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from guard.core.errors import GuardError

BAD_INPUT = 2
INTERRUPTED = 130  # what a shell reports for Ctrl-C


def run_command(command: Callable[[], int], *, refused: tuple[type[Exception], ...] = (),
                database: str | Path | None = None, resume: str | None = None) -> int:
    """`command()`'s exit status; what it raises is said in one line on stderr:

    - a GuardError, or one of `refused`: "error: MESSAGE", status 2;
    - with `database`, an sqlite3.Error: "error: cannot use the database DATABASE: ...", 2;
    - with `resume`, Ctrl-C: "interrupted: RESUME", 130 (without, Python's own handling).
    """
    database_errors = (sqlite3.Error,) if database is not None else ()
    interrupts = (KeyboardInterrupt,) if resume is not None else ()
    try:
        return command()
    except (GuardError, *refused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except database_errors as exc:
        print(f"error: cannot use the database {database}: {exc}", file=sys.stderr)
        return BAD_INPUT
    except interrupts:
        print(f"interrupted: {resume}", file=sys.stderr)
        return INTERRUPTED
