"""Plain helpers the tests import (`from helpers import ...`): paths, ports, serving the app.

Fixtures and hooks live in conftest.py; nothing here is collected or run by itself.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu"]
# Ceilings for waiting on a server or a subprocess: generous, so that they hold on a loaded machine
# (the suite with four busy loops beside it, load average about 10 on 2 cores). Every wait ends as
# soon as its readiness signal is seen; none of these is a sleep.
SERVER_START_S = 420  # `python app.py --tiny` answers GET / (inside pytest-timeout's 600 s)
THREAD_START_S = 180  # an in-process Gradio server's uvicorn thread reports `started`
STOP_S = 60  # a stopped app process exits
HTTP_S = 300  # one HTTP request of a test's client (httpx's default, 5 s, is no ceiling under load)


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
    with patient_gradio_start():
        _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    return demo, url


@contextlib.contextmanager
def patient_gradio_start(ceiling_s: float = THREAD_START_S):
    """Let an in-process Gradio server take up to `ceiling_s` to start.

    Gradio (http_server.Server.run_in_thread) gives its uvicorn thread 5 s to report `started`,
    then gives up with "Cannot find empty port": a loaded machine can need longer. This waits on
    the same signal with a generous ceiling, and fails at once if the thread ends (a port taken).
    """
    from gradio import http_server
    from gradio.exceptions import ServerFailedToStartError

    original = http_server.Server

    class PatientServer(original):
        def run_in_thread(self):
            if self.reloader:  # a Space or GRADIO_WATCH_DIRS: never in the tests
                return super().run_in_thread()
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()
            deadline = time.monotonic() + ceiling_s
            while not self.started:
                if not self.thread.is_alive() or time.monotonic() > deadline:
                    self.should_exit = True
                    raise ServerFailedToStartError(
                        f"The test server did not start within {ceiling_s:.0f} s "
                        f"(thread {'alive' if self.thread.is_alive() else 'ended'}).")
                time.sleep(0.01)
            return None

    http_server.Server = PatientServer
    try:
        yield
    finally:
        http_server.Server = original


def patient_client(url: str, **kwargs):
    """gradio_client's Client for `url`, quiet, each request with a generous ceiling (HTTP_S)."""
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": HTTP_S}, **kwargs)


def endpoint_names(url: str) -> set[str]:
    """Every endpoint callable by name: on the API page (the agent tools) or not (the page's
    plumbing, api_visibility="undocumented", which gradio_client's view_api leaves out)."""
    import httpx

    info = httpx.get(url.rstrip("/") + "/gradio_api/info?all_endpoints=True").json()
    return set(info["named_endpoints"])


def start_app_process(folder: Path, *args: str, env: dict[str, str] | None = None,
                      timeout_s: float = SERVER_START_S):
    """`python app.py --tiny ARGS` in its own process on a free port, once it answers: (process, url).

    Its output goes to folder/app.log. Stop it with `stop_app_process`. Readiness is GET / with a
    200, polled until `timeout_s`. Gradio inside the app gives its server thread 5 s to start and
    then exits with "Cannot find empty port": a loaded machine can need longer, so an app that
    exits with that line is started again on another port (at most three starts; the earlier
    logs are kept as app-start-N.log).
    """
    import subprocess
    import sys

    import httpx

    environment = {**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir()),
                   "GUARD_LAB_DATA_DIR": str(folder / "no-data"), **(env or {})}
    deadline = time.monotonic() + timeout_s
    for start in range(1, 4):
        port = free_port()
        log = open(folder / "app.log", "w")  # noqa: SIM115 (closed by the process's end)
        server = subprocess.Popen([sys.executable, "app.py", "--tiny", "--port", str(port), *args],
                                  cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        while server.poll() is None:
            try:
                if httpx.get(url, timeout=30).status_code == 200:
                    return server, url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the app did not answer within {timeout_s:.0f} s: "
                            f"{(folder / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
        output = (folder / "app.log").read_text()
        if "Cannot find empty port" not in output or start == 3:
            pytest.fail(f"the app exited: {output[-3000:]}")
        (folder / "app.log").rename(folder / f"app-start-{start}.log")
    raise AssertionError("unreachable")


def stop_app_process(server) -> None:
    import subprocess

    server.terminate()
    try:
        server.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        server.kill()


def run_async(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API keeps an event loop running in
    the main thread for the rest of the session once a browser test has run."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# ---- what an attack costs the server: time and peak memory, kept under artifacts/ ------------------

class Figures:
    """Measured figures by name, rewritten to `artifacts/<file_name>` at each record (the closing
    notes quote them). Safe across the threads of one test file."""

    def __init__(self, file_name: str):
        self.path = REPO / "artifacts" / file_name
        self.measured: dict[str, dict] = {}
        self.lock = threading.Lock()

    def record(self, name: str, **figures: float | str) -> None:
        import json

        with self.lock:
            self.measured[name] = figures
            self.path.parent.mkdir(exist_ok=True)
            self.path.write_text(json.dumps(self.measured, indent=2))


def peak_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no VmHWM line")


def reset_peak(pid: int) -> None:
    """Start a new peak from the current resident size (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class Attack:
    """Time and peak-memory growth of the server over a `with` block, recorded in `figures`
    (a test file subclasses it with its own `figures`)."""

    figures: Figures

    def __init__(self, server, name: str):
        self.pid, self.name = server.pid, name

    def __enter__(self):
        reset_peak(self.pid)
        self.base = peak_mb(self.pid)
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.started
        self.grew_mb = peak_mb(self.pid) - self.base
        self.figures.record(self.name, seconds=round(self.seconds, 2),
                            peak_growth_mb=round(self.grew_mb, 1))
        return False


# ---- a command interrupted at a chosen moment -------------------------------------------------

_SIGNAL_AFTER_SAVES = """
import os, runpy, signal, sys
from labels.runs import Runs
saved, sig, after = Runs.save_results, getattr(signal, sys.argv[1]), int(sys.argv[2])
# A shell that starts jobs in the background (CI's `cmd &`) hands them SIGINT ignored, and
# Python then installs no KeyboardInterrupt: give the command the terminal's Ctrl-C back.
signal.signal(signal.SIGINT, signal.default_int_handler)
calls = []
def save_results(self, *args, **kwargs):
    out = saved(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == after:
        os.kill(os.getpid(), sig)
    return out
Runs.save_results = save_results
sys.argv = [sys.argv[3], *sys.argv[4:]]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def signalled_after_saves(module: str, argv: list[str], *, signal_name: str,
                          saves: int) -> list[str]:
    """`python -m module argv...` that sends itself `signal_name` (SIGINT: Ctrl-C; SIGKILL)
    right after its `saves`-th stored batch of evaluation results: the same moment on any
    machine, however fast the command runs beside the test that watches it."""
    import sys

    return [sys.executable, "-c", _SIGNAL_AFTER_SAVES, signal_name, str(saves), module,
            *map(str, argv)]


@contextlib.contextmanager
def serving_reviewers(guards, folder: Path, accounts: dict[str, str]):
    """The app on the tiny models with reviewer `accounts` and a labels database in `folder`,
    no public datasets: (url, store), closed after."""
    from guard_app.reviewers import ReviewerGate
    from labels import Store

    gate = ReviewerGate.from_config(accounts, on_space=False, environ={})
    with Store(folder / "labels.db") as store:
        demo, url = launch_app(guards, folder, store=store, reviewers=gate,
                               data_dir=folder / "no-data")
        try:
            yield url, store
        finally:
            demo.close()
