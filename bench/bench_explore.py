"""Explore benchmarks: one batched sweep vs separate calls; shared-prompt category scores.

    python bench/bench_explore.py          # tiny model; the same script on a GPU is the target
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import device_line, report, side_by_side  # noqa: E402
from guard.engines.llama_guard import LlamaGuard  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.explore import category_scores, first_code_probability, sweep  # noqa: E402
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES, build_tiny_models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="Llama Guard id or folder (default: tiny model)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    lg_dir, _ = build_tiny_models(default_tiny_dir())
    guard = LlamaGuard.load(args.model or lg_dir, device=args.device)
    print(device_line(str(guard.model.device)), flush=True)
    names = ["violent", "four_blue_one_red", "harmful_answer"]
    conversations = [LLAMA_GUARD_EXAMPLES[n].conversation() for n in names]

    def sweep_ours(i):
        return sweep(guard, conversations[i])

    def sweep_baseline(i):
        conversation = conversations[i]
        enabled = guard.plan(conversation).enabled_codes
        return [guard.classify(conversation)] + [guard.classify(conversation, [c]) for c in enabled]

    t_ours, t_base = side_by_side(sweep_ours, sweep_baseline, len(names), warmup=1, rounds=2)
    report("sweep_15_variants_vs_15_calls", t_ours, t_base, 2 * len(names),
           "one batched generate over all variants vs one classify per variant "
           "(14 or 13 exclusions + the reference)")

    def scores_ours(i):
        return category_scores(guard, conversations[i])

    def scores_baseline(i):
        conversation = conversations[i]
        return [first_code_probability(guard, conversation, c)
                for c in guard.plan(conversation).enabled_codes]

    t_ours, t_base = side_by_side(scores_ours, scores_baseline, len(names), warmup=1, rounds=2)
    report("category_scores_vs_separate_teacher_forced_runs", t_ours, t_base, 2 * len(names),
           "prompt computed once and its cache shared by all candidate codes vs one full "
           "teacher-forced forward per code")


if __name__ == "__main__":
    main()
