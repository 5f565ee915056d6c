"""What `python app.py` says while it starts, so a building app never looks like a hung one.

One line per step, "Guard Lab [2/5] loading the models ...", the seconds each step took when the
next begins, and the lines of the library loggers that do slow work (the tiny models being
copied or trained, `guard.testing`) in between.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

STEPS = ("importing gradio and torch", "reading the options, checking versions",
         "opening the labels database", "loading the models", "building the page",
         "starting the server")


class Startup:
    """Prints the numbered steps of the start-up to `out` (standard error by default)."""

    def __init__(self, steps: tuple[str, ...] = STEPS, out: TextIO | None = None, *,
                 done: int = 0):
        """`done`: steps already behind (main() called by another program has its imports)."""
        self.steps = steps
        self.out = out or sys.stderr
        self.started = self._since = time.perf_counter()
        self._n = self._first = done
        handler = logging.StreamHandler(self.out)
        handler.setFormatter(logging.Formatter("    %(message)s"))
        for name in ("guard.testing",):  # the slow work worth a line of its own
            logger = logging.getLogger(name)
            if not logger.handlers:
                logger.addHandler(handler)
            logger.setLevel(logging.INFO)

    def step(self, detail: str = "") -> None:
        """Begin the next step; `detail` adds what it works on (a file, a model)."""
        now = time.perf_counter()
        if self._n > self._first:
            self._say(f"    done in {now - self._since:.1f} s")
        self._since = now
        self._n += 1
        what = self.steps[self._n - 1] if self._n <= len(self.steps) else "working"
        self._say(f"Guard Lab [{self._n}/{len(self.steps)}] {what}"
                  + (f": {detail}" if detail else "") + " ...")

    def ready(self) -> None:
        self._say(f"Guard Lab: ready after {time.perf_counter() - self.started:.1f} s")

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)
