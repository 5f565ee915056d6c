"""An OpenAI-compatible stub server of known speed, for bench/bench_scale.py and the tests.

Each `/v1/completions` request holds one of `--slots` parallel slots for `--latency-ms` and
then answers a Llama Guard completion with logprobs ("unsafe\\nS1" when the prompt contains
`attack`, else "safe"; HTTP 400 "maximum context length" when it contains `toolong`); requests
beyond the slots wait their turn, as they do on a vLLM server at its batch limit. So with c
requests in flight the ideal rate is min(c, slots) / latency. With `--max-waiting W` a request that finds every slot busy and W already waiting is refused at
once with HTTP 429 and `Retry-After` (`--retry-after`), the way a loaded gateway sheds load.

It listens on 127.0.0.1 only, prints `ready PORT` when it accepts connections, and exits by
itself after `--lifetime` seconds whatever happens to its parent; `--stats FILE` gets its
counts (JSON) when it exits.

    python bench/openai_stub.py --latency-ms 50 --slots 64

From Python, `running_stub(...)` starts one in a child process and stops it on leaving.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
MODEL = "llama-guard-stub"


def _completion(tokens: list[str], top: list[dict[str, float]]) -> bytes:
    return json.dumps({
        "id": "cmpl-stub", "object": "text_completion", "model": MODEL,
        "choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "stop",
                     "logprobs": {"tokens": tokens, "token_logprobs": [0.0] * len(tokens),
                                  "top_logprobs": top, "text_offset": [0] * len(tokens)}}],
        "usage": {"prompt_tokens": 200, "completion_tokens": len(tokens), "total_tokens": 210},
    }).encode()


SAFE = _completion(["\n\n", "safe"], [{"\n\n": -0.01}, {"safe": math.log(0.9),
                                                         "unsafe": math.log(0.1)}])
UNSAFE = _completion(["\n\n", "unsafe", "\n", "S1"],
                     [{"\n\n": -0.01}, {"unsafe": math.log(0.8), "safe": math.log(0.2)},
                      {"\n": -0.01}, {"S1": -0.01}])
TOO_LONG = (b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
            b'"type": "invalid_request_error"}}')
MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


class Stub:
    def __init__(self, latency_s: float, slots: int, max_waiting: int | None,
                 retry_after: float) -> None:
        self.latency_s, self.slots = latency_s, slots
        self.max_waiting, self.retry_after = max_waiting, retry_after
        self.free = asyncio.Semaphore(slots)
        # When each slot is next free on the stub's own clock: a request that had to wait starts
        # when its slot was due to be free, not when this process got round to noticing, so a
        # late wake-up on a loaded machine does not slow the stub's rate below slots / latency.
        self.due = [0.0] * slots
        self.waiting = self.busy = self.peak_busy = 0
        self.served = self.refused = self.connections = 0

    async def judge(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        if self.max_waiting is not None and self.busy >= self.slots \
                and self.waiting >= self.max_waiting:
            self.refused += 1
            return 429, b'{"error": {"message": "busy", "type": "rate_limit"}}', {
                "Retry-After": f"{self.retry_after:g}"}
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        self.waiting += 1
        try:
            await self.free.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        self.peak_busy = max(self.peak_busy, self.busy)
        finish = max(arrived, heapq.heappop(self.due)) + self.latency_s
        heapq.heappush(self.due, finish)
        try:
            await asyncio.sleep(max(finish - loop.time(), 0.0))
        finally:
            self.busy -= 1
            self.free.release()
        self.served += 1
        if b"toolong" in body:
            return 400, TOO_LONG, {}
        return 200, UNSAFE if b"attack" in body else SAFE, {}

    async def connection(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path = request_line.split(" ")[:2]
                length = 0
                for line in header_lines:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and path.endswith("/completions"):
                    status, payload, extra = await self.judge(body)
                elif method == "GET" and path.endswith("/models"):
                    status, payload, extra = 200, MODELS, {}
                else:
                    status, payload, extra = 404, b'{"error": "not found"}', {}
                headers = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(payload)}"
                             f"\r\n{headers}\r\n".encode("latin-1") + payload)
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError, ValueError):
            pass  # the client hung up, or the stub is closing
        finally:
            writer.close()


async def serve(args: argparse.Namespace) -> Stub:
    stub = Stub(args.latency_ms / 1000, args.slots, args.max_waiting, args.retry_after)
    server = await asyncio.start_server(stub.connection, HOST, args.port, backlog=1024,
                                        limit=1 << 22)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.lifetime)
    except TimeoutError:
        print(f"openai_stub: lifetime of {args.lifetime:g} s is over; exiting", file=sys.stderr)
    server.close()
    return stub


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--max-waiting", type=int, default=None,
                   help="refuse with 429 beyond this many waiting requests (default: never)")
    p.add_argument("--retry-after", type=float, default=0.1, help="seconds, in the 429s")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--lifetime", type=float, default=900.0, help="exit after this many seconds")
    p.add_argument("--stats", type=Path, help="write the counts here (JSON) on exit")
    args = p.parse_args(argv)
    started_cpu = time.process_time()
    stub = asyncio.run(serve(args))
    if args.stats:
        args.stats.write_text(json.dumps({
            "served": stub.served, "refused": stub.refused, "connections": stub.connections,
            "peak_busy": stub.peak_busy, "cpu_s": time.process_time() - started_cpu}))


@dataclass
class RunningStub:
    url: str  # the base URL, http://127.0.0.1:PORT/v1
    process: subprocess.Popen
    stats_path: Path

    def stats(self) -> dict:
        """The stub's counts; stops it first if it is still running."""
        self.stop()
        return json.loads(self.stats_path.read_text()) if self.stats_path.is_file() else {}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_stub(folder: Path, *, latency_ms: float, slots: int, max_waiting: int | None = None,
                 retry_after: float = 0.1, lifetime_s: float = 900.0,
                 ready_timeout_s: float = 60.0) -> Iterator[RunningStub]:
    """A stub in a child process, ready when this yields; stopped (its stats written) after."""
    stats = folder / f"stub-stats-{time.monotonic_ns()}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--latency-ms", str(latency_ms),
            "--slots", str(slots), "--retry-after", str(retry_after), "--lifetime",
            str(lifetime_s), "--stats", str(stats)]
    if max_waiting is not None:
        argv += ["--max-waiting", str(max_waiting)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    stub = RunningStub("", process, stats)
    try:
        line = ""
        # The first line it prints says it listens; select() bounds the wait for it.
        if select.select([process.stdout], [], [], ready_timeout_s)[0]:
            line = process.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"openai_stub did not start (exit status {process.poll()})")
        stub.url = f"http://{HOST}:{int(line.split()[1])}/v1"
        yield stub
    finally:
        stub.stop()


if __name__ == "__main__":
    main()
