"""Tune Llama Guard on the team's own labels (LoRA through PEFT), then measure it against the base.

    python -m guard.tune train --db guard_lab.db --out adapters/policy-v1
    python -m guard.tune compare --adapter adapters/policy-v1 --db guard_lab.db

Importing the package is cheap: torch, transformers and peft load with `tune`, `load_adapter`
and `compare_adapter`.
"""

from __future__ import annotations

from typing import Any

from guard.tune.data import (
    MIN_EXAMPLES,
    MIN_PER_CLASS,
    Split,
    TuneData,
    TuneExample,
    check_usable,
    from_export,
    from_store,
    make_split,
)
from guard.tune.errors import AdapterMismatch, NotEnoughLabels, TuneError

_LAZY = {
    "tune": "train", "TuneSettings": "train", "TuneResult": "train",
    "load_adapter": "guard.engines.adapter", "read_adapter": "guard.engines.adapter", "AdaptedLlamaGuard": "guard.engines.adapter",
    "AdapterInfo": "guard.engines.adapter", "carries_adapter": "guard.engines.adapter",
    "compare_adapter": "compare", "format_before_after": "compare", "BeforeAfter": "compare",
    "Flip": "compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        where = _LAZY[name]
        return getattr(import_module(where if "." in where else f"{__name__}.{where}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MIN_EXAMPLES", "MIN_PER_CLASS", "AdapterMismatch", "NotEnoughLabels", "Split", "TuneData",
    "TuneError", "TuneExample", "check_usable", "from_export", "from_store", "make_split",
    *_LAZY,
]
