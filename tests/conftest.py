"""Shared fixtures: the tiny offline models, built once per machine and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def tiny_cache_dir() -> Path:
    return Path(os.environ.get("GUARD_LAB_TINY_DIR") or REPO / ".cache" / "tiny")


@pytest.fixture(scope="session")
def tiny_dirs() -> tuple[Path, Path]:
    from guard.tiny import build_tiny_models

    return build_tiny_models(tiny_cache_dir())


@pytest.fixture(scope="session")
def llama_guard(tiny_dirs):
    from guard.llama_guard import LlamaGuard

    return LlamaGuard.load(tiny_dirs[0], device="cpu")


@pytest.fixture(scope="session")
def prompt_guard(tiny_dirs):
    from guard.prompt_guard import PromptGuard

    return PromptGuard.load(tiny_dirs[1], device="cpu")


@pytest.fixture(scope="session")
def guards(llama_guard, prompt_guard):
    from guard.service import Guards

    return Guards(llama_guard, prompt_guard)


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
    server.terminate()
    try:
        server.wait(timeout=30)
    except Exception:
        server.kill()


def run_async(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API keeps an event loop running in
    the main thread for the rest of the session once a browser test has run."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (never `playwright install`)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
