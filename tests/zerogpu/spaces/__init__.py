"""A stand-in for Hugging Face's `spaces` package, for the ZeroGPU boundary test.

Like ZeroGPU's `spaces.GPU` (spaces/zero/wrappers.py), the decorator computes the call's
`duration` from the same arguments, then pickles the arguments on their way into the worker and
the result (or the exception) on the way back. It is stricter in one way: what crosses must be
plain data (None, bool, int, float, str, bytes, and lists, tuples and dicts of them), the
contract of guard_app/gpu.py. Each call is appended to $SPACES_STANDIN_LOG as a JSON line.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from collections.abc import Callable
from typing import Any

PLAIN = (type(None), bool, int, float, str, bytes)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, PLAIN):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_plain(item, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, where)
        return
    raise TypeError(f"{where}: {type(value).__name__} is not plain data")


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get("SPACES_STANDIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def GPU(task: Callable | None = None, *, duration: Any = 60, size: str | None = None,  # noqa: N802
        **_: Any) -> Any:
    if size not in (None, "large", "xlarge"):  # ZeroGPU's two sizes (spaces.zero.api.GPUSize)
        raise ValueError(f"size {size!r} is not large or xlarge")

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> Any:
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            entry = {"function": fn.__name__, "duration": seconds, "size": size, "ok": False}
            try:
                if not isinstance(seconds, int | float) or not 0 < seconds <= 300:
                    raise ValueError(f"{fn.__name__}: duration {seconds!r} is not 1-300 s")
                _check_plain((args, kwargs), f"{fn.__name__} arguments")
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:  # the worker sends the exception back pickled
                    entry["error"] = type(exc).__name__
                    raise pickle.loads(pickle.dumps(exc)) from None
                _check_plain(result, f"{fn.__name__} result")
                entry["ok"] = True
                return pickle.loads(pickle.dumps(result))
            finally:
                _log(entry)
        return handler

    return wrap(task) if task is not None else wrap
