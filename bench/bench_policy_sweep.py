"""A policy's category sweep over a dataset: batched variants vs the variants one after another.

Ours is `guard.eval.sweep.sweep_dataset`: each batch of rows is judged for every variant in one
Llama Guard call and scored once by Prompt Guard, each variant stored as its own run. The
baseline is what a person did before: one `evaluate_dataset` run per variant (the policy, then
each enabled category left out), one after another. Both store every result in a real SQLite
file and judge the same rows; the verdicts are compared.

    python bench/bench_policy_sweep.py                       # tiny models, CPU, XSTest
    python bench/bench_policy_sweep.py --model meta-llama/Llama-Guard-4-12B --prompt-guard 86m
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import device_line, report, side_by_side  # noqa: E402
from guard.core.datasets import Dataset, read_dataset  # noqa: E402
from guard.core.policy import Policy  # noqa: E402
from guard.engines.llama_guard import LlamaGuard  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.engines.prompt_guard import PromptGuard  # noqa: E402
from guard.engines.service import Guards  # noqa: E402
from guard.eval.runner import DEFAULT_BATCH_SIZE, evaluate_dataset  # noqa: E402
from guard.eval.sweep import sweep_dataset, variants  # noqa: E402
from guard.testing.tiny import build_tiny_models  # noqa: E402
from labels.runs import Runs  # noqa: E402
from labels.store import Store  # noqa: E402

XSTEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "xstest_prompts.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="Llama Guard id or folder (default: tiny model)")
    parser.add_argument("--prompt-guard", help="86m, 22m or a folder (default: tiny model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=48, help="XSTest rows")
    parser.add_argument("--excluded", default="S1,S3,S4,S5,S7,S8,S9,S12,S13,S14",
                        help="the policy's excluded codes (fewer: more variants, longer run)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not XSTEST.is_file():
        raise SystemExit(f"XSTest is not at {XSTEST}")
    lg_dir, pg_dir = build_tiny_models(default_tiny_dir())
    guards = Guards(LlamaGuard.load(args.model or lg_dir, device=args.device),
                    PromptGuard.load(args.prompt_guard or pg_dir, device=args.device))
    full = read_dataset(XSTEST, "xstest")
    dataset = Dataset(full.path, full.format, full.sha256, full.rows[:args.n], ())
    policy = Policy.from_json({"name": "bench", "excluded": args.excluded.split(","),
                               "version": 1})
    found = variants(policy)
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        runs = Runs(store)

        def ours(_: int) -> None:
            sweep_dataset(dataset, guards, runs, found, name=f"ours-{next(counter)}",
                          batch_size=args.batch_size)

        def baseline(_: int) -> None:
            k = next(counter)
            for variant in found:
                evaluate_dataset(dataset, guards, runs, name=f"base-{k} [{variant.name}]",
                                 excluded=variant.policy.excluded,
                                 threshold=variant.policy.threshold,
                                 batch_size=args.batch_size)

        warm = Dataset(full.path, full.format, "1" * 64, full.rows[:args.batch_size], ())
        sweep_dataset(warm, guards, runs, found[:2], name="warmup", batch_size=args.batch_size)
        print(device_line(str(guards.llama_guard.model.device)))
        t_ours, t_base = side_by_side(ours, baseline, 1, warmup=0, rounds=args.rounds)
        by_run = {r.name: {x.row_id: x.verdict for x in runs.results(r.id)} for r in runs.list()}
    ours_name = next(n for n in by_run if n.startswith("ours-"))
    k = ours_name.split("-")[1]
    same = total = 0
    base_k = next(n.split(" ")[0] for n in by_run if n.startswith("base-"))
    for variant in found:
        a = by_run[ours_name if variant.name == "policy" else f"ours-{k} [{variant.name}]"]
        b = by_run[f"{base_k} [{variant.name}]"]
        same += sum(a[r] == b[r] for r in a)
        total += len(a)
    report("policy_sweep_batched_vs_sequential", t_ours, t_base, args.rounds * len(found),
           f"{len(found)} variants (the policy and {len(found) - 1} categories left out) x "
           f"{len(dataset.rows)} XSTest rows, batch size {args.batch_size}, both models, every "
           f"variant a stored run; same verdict {same}/{total} (ms per variant)")


if __name__ == "__main__":
    main()
