"""The full-size benchmark's smallest shape runs on a CPU and prints every line it promises.

Nothing here checks a time: only that each line is there with a number, and that the bench's own
checks (the scripted answer, same verdicts and tokens on its faster paths) hold.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.models  # the bench builds its own random-weight models

REPO = Path(__file__).resolve().parent.parent

NAMES = [
    "lg4_text_200_tokens_vs_floor",
    "lg4_text_1000_tokens_vs_floor",
    "lg4_text_4000_tokens_vs_floor",
    "lg4_1_image_vs_floor",
    "lg4_5_images_vs_floor",
    *(f"lg4_eval_batch_{size}_vs_floor" for size in (1, 2, 4, 8, 16, 32, 64)),
    "lg4_eval_token_budget_vs_floor",
    "lg4_eval_default_batch_vs_best",
    "lg4_sweep_15_variants_vs_floor",
    "lg4_category_scores_vs_floor",
    "lg4_minimal_decode_vs_classify",
    "lg4_verdict_only_generate_vs_full_answer",
    "lg4_static_cache_vs_dynamic",
    *(f"prompt_guard_{size}_{what}" for size in ("86m", "22m")
      for what in ("window_vs_floor", "batched_windows_vs_floor", "window_vs_card_a100")),
]


def test_tiny_smoke_prints_every_ratio_line():
    run = subprocess.run([sys.executable, "bench/bench_full_size.py", "--tiny-smoke", "--device",
                          "cpu"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    ratios = dict(re.findall(r"^(\w+): ratio=(\S+)$", out, flags=re.MULTILINE))
    assert sorted(ratios) == sorted(NAMES)
    assert all(math.isfinite(float(r)) and float(r) > 0 for r in ratios.values()), ratios
    assert re.search(r"^versions: torch \S+, transformers \S+", out, flags=re.MULTILINE)
    assert re.search(r"^device: cpu \(CPU\); shape: tiny-smoke", out, flags=re.MULTILINE)
    assert out.count("answer '\\n\\nsafe'") == 5  # the random model wrote the scripted verdict
    assert "same answer 3/3" in out
    assert "same first tokens: True" in out
    assert "same tokens: True" in out
