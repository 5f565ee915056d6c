"""Plain helpers the tests import (`from helpers import ...`): paths, ports, serving the app.

Fixtures and hooks live in conftest.py; nothing here is collected or run by itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu"]


def tiny_cache_dir() -> Path:
    """Where the tiny models are built and cached (GUARD_LAB_TINY_DIR, default .cache/tiny)."""
    return Path(os.environ.get("GUARD_LAB_TINY_DIR") or REPO / ".cache" / "tiny")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(guards, folder: Path, **options):
    """Build the app on the tiny models and serve it on a free local port: (demo, url)."""
    import app

    demo = app.build_demo(guards, tiny=True, swatch_dir=str(folder / "swatches"), **options)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    return demo, url


def endpoint_names(url: str) -> set[str]:
    """Every endpoint callable by name: on the API page (the agent tools) or not (the page's
    plumbing, api_visibility="undocumented", which gradio_client's view_api leaves out)."""
    import httpx

    info = httpx.get(url.rstrip("/") + "/gradio_api/info?all_endpoints=True").json()
    return set(info["named_endpoints"])


def start_app_process(folder: Path, *args: str, env: dict[str, str] | None = None,
                      timeout_s: float = 240):
    """`python app.py --tiny ARGS` in its own process on a free port, once it answers: (process, url).

    Its output goes to folder/app.log. Stop it with `stop_app_process`.
    """
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    environment = {**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir()),
                   "GUARD_LAB_DATA_DIR": str(folder / "no-data"), **(env or {})}
    log = open(folder / "app.log", "w")  # noqa: SIM115 (closed by the process's end)
    server = subprocess.Popen([sys.executable, "app.py", "--tiny", "--port", str(port), *args],
                              cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            pytest.fail(f"the app exited: {(folder / 'app.log').read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"the app did not start within {timeout_s:.0f} s")
        time.sleep(0.5)


def stop_app_process(server) -> None:
    import subprocess

    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def run_async(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API keeps an event loop running in
    the main thread for the rest of the session once a browser test has run."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
