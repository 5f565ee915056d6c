"""Shared helpers for the benchmarks: side-by-side timing in one process, and the result lines."""

from __future__ import annotations

import time
from collections.abc import Callable


def side_by_side(ours: Callable[[int], object], baseline: Callable[[int], object], n: int,
                 *, warmup: int = 2, rounds: int = 3) -> tuple[float, float]:
    """Alternate the two over the same n inputs, several rounds; return total seconds of each.

    Interleaving spreads machine noise over both sides instead of charging it to one.
    """
    for i in range(warmup):
        ours(i % n)
        baseline(i % n)
    t_ours = t_base = 0.0
    for r in range(rounds):
        for i in range(n):
            first, second = (ours, baseline) if (i + r) % 2 == 0 else (baseline, ours)
            start = time.perf_counter()
            first(i)
            middle = time.perf_counter()
            second(i)
            end = time.perf_counter()
            if first is ours:
                t_ours += middle - start
                t_base += end - middle
            else:
                t_base += middle - start
                t_ours += end - middle
    return t_ours, t_base


def report(name: str, t_ours: float, t_base: float, count: int, details: str = "") -> None:
    print(f"{name}: ratio={t_ours / t_base:.2f}")
    print(f"  ours {t_ours / count * 1e3:.2f} ms/op, baseline {t_base / count * 1e3:.2f} ms/op "
          f"over {count} ops{'; ' + details if details else ''}", flush=True)


def device_line(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"device: {device} ({torch.cuda.get_device_name()}) - the real target"
    return (f"device: {device} (tiny models on a CPU; a GPU run of this same script is the real "
            "target)")
