"""Batch evaluation: our runner over 200 conversations vs one call per conversation.

Both sides judge the same rows with Llama Guard and Prompt Guard and store every result in a
real SQLite file (ours one transaction per batch, the baseline one per row).

    python bench/bench_eval.py                  # tiny models, CPU
    python bench/bench_eval.py --model meta-llama/Llama-Guard-4-12B --prompt-guard 86m  # GPU
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import device_line, report, side_by_side  # noqa: E402
from guard.core.datasets import Dataset, Row, read_dataset  # noqa: E402
from guard.engines.llama_guard import LlamaGuard  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.engines.prompt_guard import PromptGuard  # noqa: E402
from guard.engines.service import Guards  # noqa: E402
from guard.eval.runner import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    conversation_for,
    evaluate_dataset,
    run_settings,
)
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES, build_tiny_models  # noqa: E402
from labels.runs import EvalResult, Runs  # noqa: E402
from labels.store import Store  # noqa: E402

XSTEST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "xstest_prompts.csv"


def bench_rows(n: int) -> tuple[Row, ...]:
    """The tiny model's known text inputs (prompts and responses) mixed with XSTest prompts."""
    known = [e for e in LLAMA_GUARD_EXAMPLES.values() if not e.excluded
             and not any(colours for _, _, colours in e.turns) and len(e.turns) <= 2]
    rows: list[Row] = []
    for i, example in zip(range(n // 4), itertools.cycle(known), strict=False):
        response = example.turns[1][1] if len(example.turns) == 2 else None
        rows.append(Row(f"known-{i}", 0, example.turns[0][1], response,
                        example.answer.startswith("unsafe")))
    if XSTEST.is_file():
        rows += read_dataset(XSTEST, "xstest").rows[:n - len(rows)]
    for row in itertools.cycle(list(rows)):
        if len(rows) >= n:
            break
        rows.append(Row(f"{row.row_id}-again-{len(rows)}", 0, row.prompt, row.response, row.gold))
    return tuple(rows)


def padding_share(guard: LlamaGuard, rows: list[Row], batch_size: int) -> float:
    """Share of the prompt positions in a batch that are padding."""
    lengths = [len(guard.tokenizer(guard.plan(conversation_for(r)).prompt,
                                   add_special_tokens=False)["input_ids"]) for r in rows]
    padded = real = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start:start + batch_size]
        padded += max(chunk) * len(chunk)
        real += sum(chunk)
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="Llama Guard id or folder (default: tiny model)")
    parser.add_argument("--prompt-guard", help="86m, 22m or a folder (default: tiny model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    lg_dir, pg_dir = build_tiny_models(default_tiny_dir())
    guards = Guards(LlamaGuard.load(args.model or lg_dir, device=args.device),
                    PromptGuard.load(args.prompt_guard or pg_dir, device=args.device))
    lg, pg = guards.llama_guard, guards.prompt_guard
    rows = bench_rows(args.n)
    dataset = Dataset("bench", "jsonl", "0" * 64, rows, ())
    conversations = [conversation_for(r) for r in rows]
    counter = itertools.count()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        runs = Runs(store)

        def ours(_: int) -> None:
            evaluate_dataset(dataset, guards, runs, name=f"ours-{next(counter)}",
                             batch_size=args.batch_size)

        def baseline(_: int) -> None:
            settings = run_settings(dataset, guards, name=f"baseline-{next(counter)}")
            run, _ = runs.start(settings, len(rows))
            for position, (row, conversation) in enumerate(zip(rows, conversations, strict=True)):
                verdict = lg.classify(conversation)
                score = pg.score(row.prompt)
                runs.save_results(run.id, [EvalResult(
                    row.row_id, position, row.gold, row.categories, verdict.verdict,
                    verdict.p_unsafe, verdict.category_codes, verdict.raw_output,
                    score.p_malicious)])
            runs.finish(run.id)

        small = Dataset("warm", "jsonl", "1" * 64, rows[:args.batch_size], ())
        evaluate_dataset(small, guards, runs, name="warmup", batch_size=args.batch_size)
        for row in rows[:4]:
            lg.classify(conversation_for(row))
        print(device_line(str(lg.model.device)))
        t_ours, t_base = side_by_side(ours, baseline, 1, warmup=0, rounds=args.rounds)
        by_run = {r.name: runs.results(r.id) for r in runs.list()}
        a, b = by_run["ours-0"] if "ours-0" in by_run else by_run["ours-1"], by_run["baseline-1"]
        same = sum(x.verdict == y.verdict for x, y in zip(a, b, strict=True))
        drift = max(abs(x.p_unsafe - y.p_unsafe) for x, y in zip(a, b, strict=True))
    by_length = sorted(rows, key=lambda r: r.size)
    report("eval_batched_200_vs_one_by_one", t_ours, t_base, args.rounds * len(rows),
           f"{len(rows)} conversations ({sum(r.response is not None for r in rows)} with a "
           f"response), batch size {args.batch_size}, both models, results stored; same verdict "
           f"{same}/{len(rows)}, max |p_unsafe diff| {drift:.1e}")
    print(f"  padding share at batch size {args.batch_size}: file order "
          f"{padding_share(lg, list(rows), args.batch_size):.1%}, sorted by length "
          f"{padding_share(lg, by_length, args.batch_size):.1%}; torch threads "
          f"{torch.get_num_threads()}")


if __name__ == "__main__":
    main()
