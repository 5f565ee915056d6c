"""llama.cpp engines: the OpenAI-compatible engine against llama.cpp's server vs the local engine.

The same 100 conversations go through the local llama.cpp engine (one child process) and
through OpenAIGuard against llama-cpp-python's server on the same GGUF, with 4 requests in
flight and with 1; both sides alternate in one process, several rounds.

    python bench/bench_engines.py                       # the tiny stand-in GGUF
    python bench/bench_engines.py --gguf QuantFactory/Meta-Llama-Guard-2-8B-GGUF:*Q4_K_M.gguf
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.common import report  # noqa: E402
from guard.core.categories import Family  # noqa: E402
from guard.core.conversation import Conversation, Turn  # noqa: E402
from guard.engines.llama_cpp_engine import LlamaCppGuard, guess_family, resolve_gguf  # noqa: E402
from guard.engines.loading import default_tiny_dir  # noqa: E402
from guard.engines.openai_engine import OpenAIGuard  # noqa: E402
from guard.testing.tiny_text import TEXT_EXAMPLES, build_tiny_text_model  # noqa: E402

ALIAS = "guard-under-test"


def conversations(n: int = 100) -> list[Conversation]:
    """n distinct text conversations: the trained examples, numbered so no two are equal."""
    examples = list(TEXT_EXAMPLES.values())
    out = []
    for i in range(n):
        turns = examples[i % len(examples)].turns
        role, text, _ = turns[-1]
        out.append(Conversation.build(
            [Turn(r, t) for r, t, _ in turns[:-1]] + [Turn(role, f"{text} ({i})")]))
    return out


def start_server(gguf: Path, n_ctx: int, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
         "--n_threads", str(threads), "--n_threads_batch", str(threads), "--logits_all", "true",
         "--verbose", "false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def timed(run, rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", help="a .gguf path or REPO:FILE (default: tiny stand-in)")
    parser.add_argument("--family", choices=[f.value for f in Family])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads on each side")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    gguf = resolve_gguf(args.gguf) if args.gguf else build_tiny_text_model(
        default_tiny_dir()).gguf_f32
    family = Family(args.family or guess_family(args.gguf or str(gguf)))
    items = conversations(args.n)
    print(f"device: cpu, llama.cpp with {args.threads} thread(s) on each side; {gguf.name} as "
          f"{family.label}; {len(items)} conversations x {args.rounds} rounds, alternating")
    proc, url = start_server(gguf, args.n_ctx, args.threads)
    try:
        local = LlamaCppGuard(gguf, family=family, name=str(gguf), n_ctx=args.n_ctx,
                              n_threads=args.threads)
        remote4 = OpenAIGuard(url, ALIAS, family=family, concurrency=4)
        remote1 = OpenAIGuard(url, ALIAS, family=family, concurrency=1)
        runs = {"local": lambda: local.classify_batch(items),
                "remote4": lambda: remote4.classify_batch(items),
                "remote1": lambda: remote1.classify_batch(items)}
        results = {name: run() for name, run in runs.items()}  # warm-up, and agreement below
        totals = dict.fromkeys(runs, 0.0)
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                totals[name] += timed(runs[name], 1)
        count = len(items) * args.rounds
        same = sum(a.raw_output == b.raw_output and abs(a.p_unsafe - b.p_unsafe) < 1e-3
                   for a, b in zip(results["local"], results["remote4"], strict=True))
        report("openai_engine_4_concurrent_vs_local_llama_cpp", totals["remote4"],
               totals["local"], count, f"same verdict and p_unsafe (1e-3) {same}/{len(items)}")
        report("openai_engine_sequential_vs_local_llama_cpp", totals["remote1"], totals["local"],
               count, f"HTTP overhead {(totals['remote1'] - totals['local']) / count * 1e3:.2f} "
               "ms per request (server work is the same llama.cpp decode)")
        started = time.perf_counter()
        for _ in range(50):
            remote1.served_models()
        ping_ms = (time.perf_counter() - started) / 50 * 1e3
        print(f"  a bare GET /v1/models round trip takes {ping_ms:.2f} ms on this machine: the rest "
              "of the overhead is the server's own Python work per request (logprobs, JSON)")
        report("openai_engine_4_concurrent_vs_sequential", totals["remote4"], totals["remote1"],
               count, "llama-cpp-python's server decodes one request at a time; vLLM batches")
        local.close()
        remote4.close()
        remote1.close()
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
