"""The OpenAI engine's HTTP: one I/O thread that keeps a window of requests in flight, retries
them politely, and shrinks the window when the server says it is busy.

Why one asyncio thread and not a pool of threads on httpx: measured on a 2-core machine against
a local server, httpx costs about 0.5 ms of CPU per request on one thread and 1-2 ms with 64
threads sharing its pool, and every answer has to win the GIL back before the next request goes
out. Here callers hand requests over (`Requests.submit`, any thread) and the I/O thread sends
the next waiting request the moment an answer frees a place, on kept-alive HTTP/1.1
connections, so a few hundred requests in flight cost one thread and about 0.1 ms of CPU each
(bench/bench_scale.py has the figures).

The window is AIMD, as in TCP's congestion control (`Window`): it starts at the concurrency asked
for; an answer that says the server is busy (HTTP 429 or 503) halves it, once per round of
requests (those already in flight when it was cut do not cut it again), and every other answer
grows it by 1/limit, so by one per round, back up to the concurrency asked for. A `Retry-After`
holds every new request until it has passed. Busy answers are tried again up to `busy_retries`
times, after the longer of Retry-After and the backoff; connection errors, timeouts and other
5xx answers `retries` times. Backoff doubles from `backoff` seconds (at most MAX_BACKOFF_S),
with jitter, so that hundreds of requests refused together do not come back together.

Through a proxy, or with an httpx transport of the caller's (tests record requests that way),
each request is sent with httpx on a worker thread instead; the window and retries are the same.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import email.utils
import functools
import math
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_IN_FLIGHT = 16
MAX_IN_FLIGHT = 512
MAX_RETRY_AFTER_S = 60.0  # a server asking for more is waited on this long, then asked again
MAX_BACKOFF_S = 8.0
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BUSY_STATUS = frozenset({429, 503})  # the server is up and asks us to slow down


class TransportProblem(Exception):
    """No HTTP answer: not connected, reset or timed out. `str()` names the kind, httpx-style."""


class GaveUp(Exception):
    """Every try failed; `problem` says how the last one did."""

    def __init__(self, problem: str, tries: int) -> None:
        super().__init__(f"{problem} after {tries} tries")
        self.problem, self.tries = problem, tries


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in seconds (a number, or an HTTP date), capped at
    MAX_RETRY_AFTER_S; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_s(base: float, attempt: int) -> float:
    """The wait before try `attempt + 1`: doubling from `base`, capped, times 1 to 1.5."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF_S) * random.uniform(1.0, 1.5)


class Window:
    """How many requests may be in flight now (AIMD, see the module's docstring). Plain state,
    used from the I/O thread only; times are the caller's clock."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.active = 0
        self.round = 0  # bumped by each cut; a busy answer from an older round cuts nothing
        self.busy_answers = 0
        self.resume_at = 0.0  # no new request before this (Retry-After)

    def may_start(self, now: float) -> bool:
        return now >= self.resume_at and self.active < int(self.limit)

    def start(self) -> int:
        """One more in flight; returns the round it starts in."""
        self.active += 1
        return self.round

    def answered(self) -> None:
        """A request ended with an answer that was not 'busy'."""
        self.active -= 1
        if self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)

    def failed(self) -> None:
        """A request ended without an answer (refused, reset, timed out) or with a 5xx."""
        self.active -= 1

    def busy(self, started_round: int, retry_after: float | None, now: float) -> None:
        """A request of `started_round` was answered 429 or 503."""
        self.active -= 1
        self.busy_answers += 1
        if started_round == self.round:
            self.limit = max(1.0, self.limit / 2)
            self.round += 1
        if retry_after:
            self.resume_at = max(self.resume_at, now + retry_after)


@dataclass
class _Item:
    method: str
    path: str
    body: bytes | None
    future: concurrent.futures.Future
    failed: int = 0
    busy: int = 0
    problem: str = ""
    started: bool = False  # its future is marked running (a retry's is already)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: bool = False


@dataclass
class Requests:
    """Requests to one server, sent by an I/O thread of their own. Thread-safe."""

    base_url: str
    concurrency: int
    timeout: float = 60.0
    connect_timeout: float = 5.0
    retries: int = 2
    busy_retries: int = 8
    backoff: float = 0.5
    headers: Mapping[str, str] = field(default_factory=dict)
    # Sends one request another way (httpx, on a worker thread): proxies and tests.
    send_blocking: Callable[[str, str, bytes | None], Reply] | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        default_port = self._port == (443 if self._https else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self._head = (f"Host: {host if default_port else f'{host}:{self._port}'}\r\n"
                      "Accept: application/json\r\nUser-Agent: guard-lab\r\n" + extra)
        self.window = Window(self.concurrency)
        # The blocking sender's threads: as many as may be in flight (the default executor's
        # few would cap the window).
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="guard-openai-send") \
            if self.send_blocking is not None else None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    # --- any thread ----------------------------------------------------------------------

    def submit(self, method: str, path: str, body: bytes | None = None
               ) -> concurrent.futures.Future:
        """The Reply (a final answer: not busy, not 5xx), or GaveUp, as a future."""
        return self.submit_many([(method, path, body)])[0]

    def submit_many(self, requests: Sequence[tuple[str, str, bytes | None]]
                    ) -> list[concurrent.futures.Future]:
        """`submit` for each, handed to the I/O thread at once (one wake-up, not one each)."""
        items = [_Item(method, path, body, concurrent.futures.Future())
                 for method, path, body in requests]
        self._running_loop().call_soon_threadsafe(self._enqueue_all, items)
        return [item.future for item in items]

    def call(self, method: str, path: str, body: bytes | None = None) -> Reply:
        return self.submit(method, path, body).result()

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and self._pid == os.getpid() and loop.is_running():
            # An I/O thread that cannot close its sockets in 10 s is stopped all the same.
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # A forked child (ZeroGPU's workers) has the loop object but not its thread.
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._loop = asyncio.new_event_loop()
                self._pending: collections.deque[_Item] = collections.deque()
                self._idle: list[_Conn] = []
                self._timer: asyncio.TimerHandle | None = None
                self._ssl = ssl.create_default_context() if self._https else None
                threading.Thread(target=self._loop.run_forever, name="guard-openai-io",
                                 daemon=True).start()
            return self._loop

    # --- the I/O thread --------------------------------------------------------------------

    def _enqueue_all(self, items: list[_Item]) -> None:
        self._pending.extend(items)
        self._pump()

    def _enqueue(self, item: _Item, *, first: bool = False) -> None:
        if first:
            self._pending.appendleft(item)  # a retry goes before requests that never went
        else:
            self._pending.append(item)
        self._pump()

    def _pump(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        while self._pending and self.window.may_start(now):
            item = self._pending.popleft()
            if item.started or item.future.set_running_or_notify_cancel():
                item.started = True
                loop.create_task(self._attempt(item, self.window.start()))
        if self._pending and now < self.window.resume_at and self._timer is None:
            self._timer = loop.call_at(self.window.resume_at, self._resume)

    def _resume(self) -> None:
        self._timer = None
        self._pump()

    async def _attempt(self, item: _Item, started_round: int) -> None:
        loop = asyncio.get_running_loop()
        reply = None
        try:
            reply = await self._send(item)
        except TransportProblem as exc:
            item.problem = str(exc)
        except Exception as exc:  # not ours to judge: the caller's thread gets it
            self.window.failed()
            item.future.set_exception(exc)
            self._pump()
            return
        if reply is not None and reply.status in BUSY_STATUS:
            wait = retry_after_seconds(reply.headers.get("retry-after"))
            self.window.busy(started_round, wait, loop.time())
            item.busy += 1
            item.problem = f"HTTP {reply.status}: {reply.text[:200]}"
            again = item.busy <= self.busy_retries
            delay = max(wait or 0.0, backoff_s(self.backoff, item.busy))
        elif reply is not None and reply.status not in RETRY_STATUS:
            self.window.answered()
            item.future.set_result(reply)
            self._pump()
            return
        else:
            self.window.failed()
            if reply is not None:
                item.problem = f"HTTP {reply.status}: {reply.text[:200]}"
            item.failed += 1
            again = item.failed <= self.retries
            delay = backoff_s(self.backoff, item.failed)
        if again:
            loop.call_later(delay, functools.partial(self._enqueue, item, first=True))
        else:
            item.future.set_exception(GaveUp(item.problem, item.failed + item.busy))
        self._pump()

    async def _send(self, item: _Item) -> Reply:
        if self.send_blocking is not None:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self.send_blocking, item.method, item.path, item.body)
        for _ in range(2):
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                async with asyncio.timeout(self.timeout):
                    reply, keep = await self._exchange(conn, item)
            except TimeoutError:
                conn.writer.close()
                raise TransportProblem(f"ReadTimeout: the server took longer than "
                                       f"{self.timeout:g} s to answer") from None
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.writer.close()
                if conn.used and isinstance(exc, asyncio.IncompleteReadError) \
                        and not exc.partial:
                    continue  # a kept-alive connection the server had closed: a new one
                if conn.used and isinstance(exc, ConnectionResetError | BrokenPipeError):
                    continue
                raise TransportProblem(f"RemoteProtocolError: {exc!r}") from None
            except (OSError, ValueError) as exc:
                conn.writer.close()
                raise TransportProblem(f"ReadError: {exc!r}") from None
            if keep:
                conn.used = True
                self._idle.append(conn)
            else:
                conn.writer.close()
            return reply
        raise TransportProblem("RemoteProtocolError: the server closed the connection twice")

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, limit=1 << 20)
        except TimeoutError:
            raise TransportProblem(f"ConnectTimeout: no connection within "
                                   f"{self.connect_timeout:g} s") from None
        except OSError as exc:
            raise TransportProblem(f"ConnectError: {exc}") from None
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, item: _Item) -> tuple[Reply, bool]:
        body = item.body or b""
        length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" \
            if item.body is not None else ""
        conn.writer.write(f"{item.method} {self._prefix}{item.path} HTTP/1.1\r\n{self._head}"
                          f"{length}\r\n".encode("latin-1") + body)
        reader = conn.reader
        status_line = await reader.readuntil(b"\r\n")
        version, status = status_line.split(b" ", 2)[:2]
        headers = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            data = await _chunked(reader)
        else:
            data = await reader.read()
            headers["connection"] = "close"
        connection = headers.get("connection", "").lower()
        keep = connection != "close" and (version == b"HTTP/1.1" or connection == "keep-alive")
        return Reply(int(status), headers, data), keep

    async def _shutdown(self) -> None:
        for conn in self._idle:
            conn.writer.close()
        self._idle.clear()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
