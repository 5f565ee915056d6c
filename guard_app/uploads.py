"""Uploads: a byte quota per visitor, files nobody holds swept within minutes, and the check that a
file an endpoint reads is one this visitor uploaded.

Gradio's upload route (/gradio_api/upload) takes a file from anyone and keeps it until its cache
is cleaned (GUARD_LAB_STATE_TTL, 2 hours). We wrap that route, as plain ASGI, so that:

- a visitor (guard_app.fair.visitor) may keep at most `quota` bytes of uploads at once
  (GUARD_LAB_UPLOAD_QUOTA): a larger upload is refused by its declared length, before a byte
  of it is stored (an upload without a length is refused too);
- an upload that no live session holds (in a gr.State: the conversation, the images waiting in
  the composer) and that no evaluation run keeps (`keep`) is deleted `ttl_s` after it came
  (GUARD_LAB_UPLOAD_TTL, 10 minutes); Gradio's own cleaning still removes the rest later;
- `check_owned` tells an endpoint that reads a dataset whether the path is one this visitor
  uploaded: Gradio checks that a file input lies in its upload folder, which holds every
  visitor's uploads (by their content's hash).

No gradio import at module level: the route is Starlette's, the sessions Gradio's state holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.core import limits
from guard.core.errors import GuardError

log = logging.getLogger("guard_lab")
ROUTE = "/gradio_api/upload"
UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}  # as Gradio reads max_file_size
DRAIN_BYTES = 256 * 2**20  # a refused body is read and dropped up to this (see moderations.py)
_kept: set[str] = set()  # files an evaluation run still reads (keep)
_active: Uploads | None = None  # the one the launched app installed (check_owned asks it)


class NotYours(GuardError):
    """A file that this visitor did not upload (or that has been swept since)."""


def size_bytes(text: str) -> int:
    """'50mb' -> 50,000,000 (Gradio's units)."""
    match = re.fullmatch(r"\s*(\d+)\s*(b|kb|mb|gb)\s*", text.lower())
    if not match:
        raise ValueError(f"a size looks like 50mb or 800kb, got {text!r}")
    return int(match.group(1)) * UNITS[match.group(2)]


def largest_file(labels: bool = True) -> str:
    """The largest file the app reads, as Gradio's max_file_size: an image (20 MiB), or with the
    labels database a dataset (100 MiB: GUARD_LAB_MAX_DATASET_BYTES, decompressed)."""
    largest = max(limits.MAX_IMAGE_BYTES, limits.MAX_DATASET_BYTES if labels else 0)
    return f"{largest}b"


def keep(path: str | Path) -> None:
    """An evaluation run reads this upload again (its rows' texts): do not sweep it early."""
    _kept.add(os.path.realpath(path))


def check_owned(path: str | Path, request: Any) -> None:
    """NotYours unless `path` is an upload of the visitor making `request` (when the app runs
    with the upload guard; before launch, Gradio's own check of its upload folder stands)."""
    uploads = _active
    if uploads is None or request is None:
        return
    if not uploads.owned(path, uploads.visitor(request)):
        raise NotYours(f"{Path(path).name} is not a file you uploaded to this server (or it was "
                       f"deleted: uploads that no page holds go after {uploads.ttl_s // 60} "
                       "minutes). Upload it again, from the page or with gradio_client's "
                       "handle_file, then call again.")


@dataclass
class _File:
    size: int
    came: float
    visitors: set[str] = field(default_factory=set)


class Uploads:
    """Who uploaded what, still on disk; the quota; the sweep."""

    def __init__(self, *, quota: int, ttl_s: float, visitor: Callable[[Any], str],
                 held: Callable[[], set[str]] = set, clock: Callable[[], float] = time.monotonic):
        self.quota, self.ttl_s, self.visitor = quota, int(ttl_s), visitor
        self.held, self.clock = held, clock
        self._files: dict[str, _File] = {}
        self._reserved: dict[str, int] = {}  # visitor -> bytes of uploads under way
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # ---- the books ----

    def used(self, who: str) -> int:
        """Bytes of this visitor's uploads on disk, and under way."""
        with self._lock:
            return self._used(who)

    def _used(self, who: str) -> int:
        return sum(f.size for f in self._files.values() if who in f.visitors) + \
            self._reserved.get(who, 0)

    def reserve(self, who: str, size: int) -> str | None:
        """Take `size` bytes of the visitor's quota for an upload under way, or say why not."""
        with self._lock:
            used = self._used(who)
            if used + size > self.quota:
                return (f"This upload is {size / 1e6:.1f} MB and your uploads already take "
                        f"{used / 1e6:.1f} MB of the {self.quota / 1e6:g} MB one visitor may "
                        "keep at once (GUARD_LAB_UPLOAD_QUOTA). Remove files you no longer need "
                        "from the page, or wait: uploads no page holds are deleted "
                        f"{max(1, self.ttl_s // 60)} minutes after they came.")
            self._reserved[who] = self._reserved.get(who, 0) + size
        return None

    def release(self, who: str, size: int) -> None:
        with self._lock:
            left = self._reserved.get(who, 0) - size
            if left > 0:
                self._reserved[who] = left
            else:
                self._reserved.pop(who, None)

    def record(self, who: str, paths: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for path in paths:
                real = os.path.realpath(path)
                try:
                    size = os.stat(real).st_size
                except OSError:
                    continue
                entry = self._files.setdefault(real, _File(size, now))
                entry.visitors.add(who)
                entry.came = now

    def owned(self, path: str | Path, who: str) -> bool:
        with self._lock:
            entry = self._files.get(os.path.realpath(path))
            return entry is not None and who in entry.visitors and os.path.isfile(path)

    # ---- the sweep ----

    def sweep(self) -> int:
        """Delete the uploads older than ttl_s that nothing holds; how many went."""
        held = {os.path.realpath(p) for p in self.held()} | _kept
        now, gone = self.clock(), 0
        with self._lock:
            files = list(self._files.items())
        for path, entry in files:
            if not os.path.exists(path):
                self._forget(path)
            elif now - entry.came >= self.ttl_s and path not in held:
                with contextlib.suppress(OSError):
                    os.remove(path)
                    gone += 1
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(path))  # its folder (the content's hash), if empty
                self._forget(path)
        return gone

    def _forget(self, path: str) -> None:
        with self._lock:
            self._files.pop(path, None)

    def start(self, every_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    gone = self.sweep()
                    if gone:
                        log.info("swept %d upload%s that no session holds", gone,
                                 "s" if gone != 1 else "")
                except Exception:  # noqa: BLE001 (a background thread: log it, keep sweeping)
                    log.exception("sweeping uploads failed")

        threading.Thread(target=loop, daemon=True, name="guard-lab-uploads").start()

    def stop(self) -> None:
        self._stop.set()

    # ---- the route ----

    def wrap(self, inner: Any) -> Any:
        """The upload route's ASGI app, with the quota before it and the books after it."""
        async def guarded_upload(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") != "http" or scope.get("method") != "POST":
                await inner(scope, receive, send)
                return
            from starlette.requests import Request

            request = Request(scope)
            who = self.visitor(request)
            declared = request.headers.get("content-length", "").strip()
            if not declared.isdigit():
                await _refuse(send, 411, "Send the upload with its Content-Length (browsers and "
                                         "gradio_client do).")
                return
            size = int(declared)
            refused = self.reserve(who, size)
            if refused:
                await _drain(receive, min(size, DRAIN_BYTES))
                await _refuse(send, 413, refused)
                log.info("refused an upload (413): %s", refused[:200])
                return
            status, body = 0, []

            async def capture(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body":
                    body.append(message.get("body", b""))
                await send(message)

            try:
                await inner(scope, receive, capture)
            finally:
                if status == 200:
                    with contextlib.suppress(ValueError, TypeError):
                        paths = json.loads(b"".join(body))
                        self.record(who, [p for p in paths if isinstance(p, str)])
                self.release(who, size)
        return guarded_upload


async def _refuse(send: Any, status: int, message: str) -> None:
    data = message.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": data})


async def _drain(receive: Any, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def held_by_sessions(app: Any) -> Callable[[], set[str]]:
    """The file paths any live session's state holds (the conversation's images, the composer's)."""
    def held() -> set[str]:
        holder = getattr(app, "state_holder", None)
        found: set[str] = set()
        if holder is None:
            return found
        for session in list(holder.session_data.values()):
            for value in list(session.state_data.values()):
                _paths(value, found, depth=0)
        return found
    return held


def _paths(value: Any, found: set[str], depth: int) -> None:
    if depth > 6:
        return
    if isinstance(value, str):
        if value.startswith("/") and len(value) < 4096:
            found.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _paths(item, found, depth + 1)
    elif isinstance(value, list | tuple | set):
        for item in value:
            _paths(item, found, depth + 1)
    else:
        path = getattr(value, "path", None)  # FileData
        if isinstance(path, str):
            found.add(path)


def install(demo: Any, app: Any, *, quota: str, ttl_s: float,
            visitor: Callable[[Any], str]) -> Uploads:
    """Put the quota in front of the upload route of Gradio's running FastAPI `app` and start
    the sweep (once per app; a second call replaces the first).

    The app has started by now (Starlette adds no middleware then), so the guard wraps its built
    middleware stack and takes the upload requests only: everything else passes untouched.
    """
    global _active
    previous = getattr(app.state, "guard_lab_uploads", None)
    if previous is not None:
        previous.stop()
    uploads = Uploads(quota=size_bytes(quota), ttl_s=ttl_s, visitor=visitor,
                      held=held_by_sessions(app))
    app.state.guard_lab_uploads = uploads
    if not getattr(app.state, "guard_lab_upload_guard", False):
        stack = app.middleware_stack or app.build_middleware_stack()

        async def route(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and scope.get("path", "").endswith(ROUTE):
                await app.state.guard_lab_uploads.wrap(stack)(scope, receive, send)
            else:
                await stack(scope, receive, send)

        app.middleware_stack = route
        app.state.guard_lab_upload_guard = True
    uploads.start(every_s=max(1.0, min(60.0, ttl_s / 4)))
    _active = uploads
    return uploads
