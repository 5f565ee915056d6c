"""Exports downloaded once, by the reviewer who made them, through a short-lived signed link.

A `gr.File` output would be copied into Gradio's cache and served to anyone holding its URL, for
ever. Instead each export stays in a temporary folder of its own that only this process knows;
the page gets a link signed with a per-process random secret, bound to the reviewer and to an
expiry a few minutes away. The first download, the expiry or the end of the reviewer's session
(whichever comes first) deletes the folder, and whatever is pending when the process exits goes
too. No gradio here: the route is plain FastAPI on the app Gradio serves.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard_app.reviewers import duration

# Under /gradio_api so that Gradio's Node front proxy (SSR mode) forwards it to Python too.
ROUTE = "/gradio_api/guard-lab/export/{token}"
PREFIX = "guard-lab-export-"  # labeled.logic.export_file's temporary folders
AGAIN = "Export again from the Labeled examples tab."


class LinkRefused(Exception):
    """A download link that is malformed, forged, expired, used, or whose session ended."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Link:
    url: str  # relative to the app's address: 'gradio_api/guard-lab/export/<token>'
    filename: str
    ttl: float  # seconds it works for, once


@dataclass
class _Pending:
    folder: Path
    path: Path
    reviewer: str
    expires: float  # wall-clock seconds
    still_valid: Callable[[], bool]
    timer: threading.Timer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Downloads:
    """The exports waiting to be downloaded, each under a signed one-time link."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.time):
        self.ttl = ttl
        self.clock = clock
        self._secret = secrets.token_bytes(32)  # per process: links die with the server
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    # ---- issuing and claiming ----

    def _sign(self, file_id: str, expires_ms: int, reviewer: str) -> str:
        message = f"{file_id}.{expires_ms}.{reviewer}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, path: str | Path, reviewer: str, *,
              still_valid: Callable[[], bool] | None = None) -> Link:
        """A link to `path`, whose folder is deleted with it; `still_valid` is asked on download
        (the reviewer's session, so that signing out also kills the link)."""
        path = Path(path)
        file_id = _b64(secrets.token_bytes(18))
        expires = self.clock() + self.ttl
        expires_ms = int(expires * 1000)
        timer = threading.Timer(self.ttl, self._expire, (file_id,))
        timer.daemon = True
        with self._lock:
            self._pending[file_id] = _Pending(path.parent, path, reviewer, expires,
                                              still_valid or (lambda: True), timer)
        timer.start()
        token = f"{file_id}.{expires_ms}.{self._sign(file_id, expires_ms, reviewer)}"
        return Link(ROUTE.format(token=token).lstrip("/"), path.name, self.ttl)

    def claim(self, token: str) -> _Pending:
        """The pending export behind `token`, taken off the table (a link works once).

        The caller sends the file, then calls `remove_folder(pending.folder)`.
        """
        parts = token.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise LinkRefused(403, f"This download link is not valid. {AGAIN}")
        file_id, expires_ms, signature = parts[0], int(parts[1]), parts[2]
        with self._lock:
            pending = self._pending.get(file_id)
            if pending is None:
                if expires_ms / 1000 <= self.clock():
                    raise LinkRefused(404, self._expired_message())
                raise LinkRefused(404, "This download link was already used (each link works "
                                       f"once) or never existed. {AGAIN}")
            if not hmac.compare_digest(signature,
                                       self._sign(file_id, expires_ms, pending.reviewer)):
                raise LinkRefused(403, f"This download link is not valid. {AGAIN}")
            del self._pending[file_id]
        pending.timer.cancel()
        if pending.expires <= self.clock():
            self.remove_folder(pending.folder)
            raise LinkRefused(404, self._expired_message())
        if not pending.still_valid():
            self.remove_folder(pending.folder)
            raise LinkRefused(403, "The reviewer session that made this export has ended. "
                                   f"Sign in again, then {AGAIN[0].lower()}{AGAIN[1:]}")
        if not pending.path.is_file():
            self.remove_folder(pending.folder)
            raise LinkRefused(404, f"This export's file is gone. {AGAIN}")
        return pending

    def _expired_message(self) -> str:
        return (f"This download link has expired (links work once, for {duration(self.ttl)}) "
                f"and its file is deleted. {AGAIN}")

    def _expire(self, file_id: str) -> None:
        with self._lock:
            pending = self._pending.pop(file_id, None)
        if pending is not None:
            self.remove_folder(pending.folder)

    @staticmethod
    def remove_folder(folder: Path) -> None:
        # Only our own folders: never delete a place a caller chose.
        if folder.name.startswith(PREFIX):
            shutil.rmtree(folder, ignore_errors=True)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Delete every export still waiting (at exit)."""
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p.timer.cancel()
            self.remove_folder(p.folder)

    # ---- the route ----

    def respond(self, token: str) -> Any:
        """The file (then its folder is deleted), or a plain-text 403/404 saying what to do."""
        from fastapi.responses import FileResponse, PlainTextResponse
        from starlette.background import BackgroundTask

        try:
            pending = self.claim(token)
        except LinkRefused as refused:
            return PlainTextResponse(str(refused), status_code=refused.status,
                                     headers={"Cache-Control": "no-store"})
        return FileResponse(pending.path, filename=pending.path.name,
                            headers={"Cache-Control": "no-store"},
                            background=BackgroundTask(self.remove_folder, pending.folder))

    def install_routes(self, app: Any) -> None:
        """Add GET ROUTE to the FastAPI `app` that Gradio serves (once per app)."""
        with self._lock:
            installed = getattr(app.state, "guard_lab_downloads", None) is not None
            app.state.guard_lab_downloads = self  # the route asks whoever installed it last
            if not installed:
                app.add_api_route(ROUTE, _endpoint(app), methods=["GET"],
                                  include_in_schema=False, name="guard_lab_download_export")


def _endpoint(app: Any) -> Callable[[str], Any]:
    def download_export(token: str) -> Any:
        return app.state.guard_lab_downloads.respond(token)
    return download_export
