"""Batch evaluation through the OpenAI engine against a server of known speed (bench/openai_stub.py).

The stub holds each request for `--latency-ms` in one of `--slots` parallel slots, so with c
requests in flight the ideal is min(c, slots) / latency rows per second. For each concurrency
and dataset size this runs `guard.eval`'s runner (`evaluate_dataset`, the engine loaded the way
`python -m guard.eval --engine openai --concurrency c` loads it, no Prompt Guard) into a fresh
SQLite file and prints rows per second against that ideal, the client's CPU per row (this
process, less the store's writes), and the store's share of the time (the writes, in wall time
and in CPU). Then (unless `--no-kill`) it runs `python -m guard.eval` itself on the largest
set, SIGKILLs it mid-run, runs the same command again, and checks the stored rows: exactly one
per row, none written twice.

    python bench/bench_scale.py                              # the whole table and the kill check
    python bench/bench_scale.py --rows 10000                 # one size
    python bench/bench_scale.py --rows 100000 --concurrency 64 --no-kill
    python bench/bench_scale.py --rows 100000 --concurrency 64 --kill-only

A setting whose whole set would take longer than `--max-full-s` (200) at the ideal rate
(concurrency 1 and 4 on 10,000 rows, 1 to 16 on 100,000) judges only the first rows that fit in
`--budget-s` (15) seconds (`--limit`); its line says how many. `--full` judges every row (about
3 hours at concurrency 1 on 100,000 rows). The defaults (100 ms, 64 slots: an ideal of 640 rows
a second) take about 14 minutes in all: 100,000 rows at concurrency 64 about 3, the kill and
resume about 4.5.

Lines: `openai_eval_vs_ideal_c{c}_{rows}: ratio=...` for each setting, and
`openai_eval_vs_ideal_c64: ratio=...` (the largest set at concurrency 64).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.openai_stub import MODEL, running_stub  # noqa: E402
from guard.core import limits  # noqa: E402
from guard.core.datasets import read_dataset  # noqa: E402
from guard.engines.loading import EngineOptions, load_llama_guard  # noqa: E402
from guard.engines.service import Guards  # noqa: E402
from guard.eval.runner import evaluate_dataset  # noqa: E402
from labels.runs import Runs  # noqa: E402
from labels.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORDS = ["how", "do", "I", "bake", "bread", "with", "whole", "wheat", "flour", "and", "a",
         "sourdough", "starter", "that", "is", "slow", "to", "rise", "what", "is", "the",
         "capital", "of", "france", "tell", "me", "a", "story", "about", "a", "dragon", "who",
         "collects", "old", "maps", "explain", "how", "vaccines", "train", "the", "immune",
         "system", "in", "plain", "words", "for", "a", "child"]


def write_dataset(path: Path, rows: int, seed: int = 7) -> Path:
    """JSONL rows of 20-80 words; one in seven asks for an `attack` (the stub says unsafe)."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(rows):
            words = rng.choices(WORDS, k=rng.randint(20, 80))
            unsafe = i % 7 == 0
            if unsafe:
                words.insert(rng.randint(0, len(words)), "attack")
            out.write(json.dumps({"id": f"r{i}", "prompt": " ".join(words),
                                  "label": "unsafe" if unsafe else "safe",
                                  "categories": "S1" if unsafe else ""}) + "\n")
    return path


class TimedRuns(Runs):
    """Runs that keep the wall time and the CPU time (of the writing thread) of every write."""

    wall_s = cpu_s = 0.0
    writes = 0

    def save_results(self, run_id, results):  # type: ignore[no-untyped-def]
        wall, cpu = time.perf_counter(), time.thread_time()
        super().save_results(run_id, results)
        self.cpu_s += time.thread_time() - cpu
        self.wall_s += time.perf_counter() - wall
        self.writes += 1


@dataclass
class Measured:
    concurrency: int
    dataset_rows: int
    judged: int
    seconds: float
    ideal_rows_s: float
    client_cpu_s: float  # the process, less the store's writes
    store_cpu_s: float
    store_wall_s: float
    writes: int
    slots: int
    latency_s: float

    @property
    def rows_s(self) -> float:
        return self.judged / self.seconds

    @property
    def turnaround_ms(self) -> float:
        """Time per request beyond the stub's latency, as the rate says (client, scheduling)."""
        in_flight = self.concurrency  # beyond the slots, requests wait in the stub's queue
        return (min(in_flight, self.slots) / self.rows_s - self.latency_s) * 1000

    @property
    def ratio(self) -> float:
        return self.rows_s / self.ideal_rows_s

    def line(self) -> str:
        return (f"openai_eval_vs_ideal_c{self.concurrency}_{self.dataset_rows}: "
                f"ratio={self.ratio:.2f}\n"
                f"  {self.judged:,} of {self.dataset_rows:,} rows in {self.seconds:.1f} s: "
                f"{self.rows_s:,.0f} rows/s, ideal {self.ideal_rows_s:,.0f} (each request "
                f"{self.turnaround_ms:.1f} ms over the stub's latency); client "
                f"{self.client_cpu_s / self.judged * 1e6:.0f} us CPU/row "
                f"({self.client_cpu_s / self.seconds:.2f} cores); store "
                f"{self.store_wall_s / self.seconds:.1%} of the time in {self.writes} writes, "
                f"{self.store_cpu_s / self.judged * 1e6:.0f} us CPU/row "
                f"({self.store_cpu_s / self.seconds:.2f} cores)")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(folder: Path, data: Path, dataset_rows: int, concurrency: int, url: str,
            latency_s: float, slots: int, budget_s: float | None) -> Measured:
    """One setting; `budget_s`: judge only the rows that fit this long at the ideal rate."""
    ideal = min(concurrency, slots) / latency_s
    limit = None if budget_s is None else min(dataset_rows, max(int(ideal * budget_s), 1))
    dataset = read_dataset(data, "jsonl")
    engine = load_llama_guard(EngineOptions(
        engine="openai", family="llama-guard-3", openai_concurrency=concurrency,
        openai_env={"GUARD_LAB_OPENAI_BASE_URL": url, "GUARD_LAB_OPENAI_MODEL": MODEL}))
    db = folder / f"c{concurrency}-{dataset_rows}.db"
    with engine, Store(db) as store:
        runs = TimedRuns(store)
        cpu, wall = cpu_s(), time.perf_counter()
        outcome = evaluate_dataset(dataset, Guards(engine, None), runs, name="bench",
                                   limit=limit)
        seconds, used = time.perf_counter() - wall, cpu_s() - cpu
    db.unlink()
    assert outcome.failed == 0, f"{outcome.failed} rows failed"
    return Measured(concurrency, dataset_rows, outcome.judged, seconds, ideal,
                    used - runs.cpu_s, runs.cpu_s, runs.wall_s, runs.writes, slots, latency_s)


def stored(db: Path) -> tuple[int, int]:
    """(rows, distinct row ids) stored; (0, 0) before the tables exist."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(
                "SELECT count(*), count(DISTINCT row_id) FROM eval_results").fetchone()
    except sqlite3.OperationalError:
        return 0, 0


def kill_and_resume(folder: Path, data: Path, rows: int, concurrency: int, url: str,
                    kill_at: float) -> None:
    """SIGKILL `python -m guard.eval` once `kill_at` of the rows are stored, run it again."""
    db = folder / "killed.db"
    argv = [sys.executable, "-m", "guard.eval", str(data), "--format", "jsonl", "--out", str(db),
            "--engine", "openai", "--family", "llama-guard-3", "--prompt-guard", "none",
            "--concurrency", str(concurrency), "--name", "killed"]
    env = {**os.environ, "GUARD_LAB_OPENAI_BASE_URL": url, "GUARD_LAB_OPENAI_MODEL": MODEL,
           "GUARD_LAB_MAX_DATASET_ROWS": str(rows)}
    env.pop("GUARD_LAB_OPENAI_CONCURRENCY", None)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while stored(db)[0] < kill_at * rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"guard.eval ended before the kill (status {proc.returncode}): "
                         + proc.stderr.read().decode()[-2000:])
    before, distinct_before = stored(db)
    with sqlite3.connect(db) as conn:
        times_before = dict(conn.execute("SELECT row_id, created_at FROM eval_results"))
    resumed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=900)
    if resumed.returncode != 0:
        raise SystemExit(f"the resumed run failed: {resumed.stderr[-2000:]}")
    after, distinct_after = stored(db)
    with sqlite3.connect(db) as conn:
        rewritten = sum(1 for row_id, at in conn.execute(
            "SELECT row_id, created_at FROM eval_results") if times_before.get(row_id, at) != at)
        status = conn.execute("SELECT status FROM eval_runs").fetchone()[0]
    ok = after == distinct_after == rows and distinct_before == before and rewritten == 0
    print(f"openai_eval_kill_resume_{rows}: {'ok' if ok else 'FAILED'}\n"
          f"  killed with {before:,} rows stored ({distinct_before:,} distinct); the same command "
          f"again: {after:,} stored, {distinct_after:,} distinct, {rewritten} stored rows "
          f"written again, run {status}; {time.perf_counter() - started:.0f} s in all",
          flush=True)
    if not ok:
        raise SystemExit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="10000,100000", help="dataset sizes, comma-separated")
    p.add_argument("--concurrency", default="1,4,16,64,256", help="comma-separated")
    p.add_argument("--latency-ms", type=float, default=100.0,
                   help="the stub's time per request")
    p.add_argument("--slots", type=int, default=64, help="the stub's parallel slots")
    p.add_argument("--max-full-s", type=float, default=200.0,
                   help="judge the whole set when it takes at most this long at the ideal rate")
    p.add_argument("--budget-s", type=float, default=15.0,
                   help="...else only the rows that fit this long at the ideal rate")
    p.add_argument("--full", action="store_true", help="judge every row of every setting")
    p.add_argument("--no-kill", action="store_true", help="skip the kill-and-resume check")
    p.add_argument("--kill-only", action="store_true", help="only the kill-and-resume check")
    p.add_argument("--kill-at", type=float, default=0.4, help="kill once this share is stored")
    args = p.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    settings = [int(c) for c in args.concurrency.split(",")]
    limits.MAX_DATASET_ROWS = max(limits.MAX_DATASET_ROWS, *sizes)
    latency_s = args.latency_ms / 1000
    print(f"stub: {args.latency_ms:g} ms per request, {args.slots} slots (ideal "
          f"{args.slots / latency_s:,.0f} rows/s at {args.slots}+ in flight); "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        with running_stub(folder, latency_ms=args.latency_ms, slots=args.slots,
                          lifetime_s=3 * 3600) as stub:
            for size in sizes:
                data = write_dataset(folder / f"rows-{size}.jsonl", size)
                for concurrency in [] if args.kill_only else settings:
                    whole_s = size * latency_s / min(concurrency, args.slots)
                    budget = None if args.full or whole_s <= args.max_full_s else args.budget_s
                    result = measure(folder, data, size, concurrency, stub.url, latency_s,
                                     args.slots, budget)
                    print(result.line(), flush=True)
                    if concurrency == 64 and size == max(sizes):
                        print(f"openai_eval_vs_ideal_c64: ratio={result.ratio:.2f}", flush=True)
            if not args.no_kill:
                kill_and_resume(folder, folder / f"rows-{max(sizes)}.jsonl", max(sizes),
                                64 if 64 in settings else settings[-1], stub.url, args.kill_at)
        stats = stub.stats()
        print(f"stub: served {stats.get('served', 0):,} requests, peak {stats.get('peak_busy')} "
              f"busy slots, {stats.get('cpu_s', 0):.1f} s of CPU", flush=True)


if __name__ == "__main__":
    main()
