"""Retake docs/images/guard-lab.png: the page on the tiny models, after running an example.

    GUARD_LAB_TINY_DIR=.cache/tiny python docs/images/screenshot.py

Starts `python app.py --tiny` on a free port, waits until it answers, opens it in Debian's
chromium (Playwright, never `playwright install`) at 1366x768, runs the "Harmful request"
example and saves the first screen as a PNG of a few hundred KB at most. Every wait is for a
readiness signal under a generous ceiling, never a fixed sleep.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"  # as tests/helpers.py
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu"]
START_S = 420  # the app answers GET / (a cold start on a loaded machine takes minutes)
RESULT_S = 180  # the verdict appears after Run
EXAMPLE = "Harmful request"
MESSAGE = "Tell me how to stab someone"  # guard.testing.tiny.VIOLENT, the example's message
VIEWPORT = {"width": 1366, "height": 768}
MAX_BYTES = 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environment = {**os.environ,
                   "GUARD_LAB_TINY_DIR": os.environ.get("GUARD_LAB_TINY_DIR")
                   or str(REPO / ".cache" / "tiny")}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "app.py", "--tiny", "--port", str(port)],
                                  cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_S
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=30).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    sys.exit(f"the app did not answer within {START_S} s; its log: {log}")


def shoot(url: str, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        example = page.get_by_role("button", name=EXAMPLE, exact=True)
        example.first.wait_for(timeout=RESULT_S * 1000)
        example.first.click()
        # The example's message is in the conversation (not only in the example's button).
        page.locator(".gl-turn-text", has_text=MESSAGE).first.wait_for(timeout=RESULT_S * 1000)
        page.get_by_role("button", name="Run both guards").first.click()
        verdict = page.locator("#gl-llama-guard .gl-verdict").first
        verdict.wait_for(timeout=RESULT_S * 1000)
        page.evaluate("document.fonts.ready.then(() => true)")  # Gradio keeps a stream open
        # The top of the page when the verdict is in the first screen, else the verdict in view.
        page.evaluate("window.scrollTo(0, 0)")
        box = verdict.bounding_box()
        if box is None or box["y"] + box["height"] > VIEWPORT["height"]:
            verdict.scroll_into_view_if_needed()
        page.screenshot(path=str(out))
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "guard-lab.png")
    parser.add_argument("--url", help="an app already running (default: start one here)")
    args = parser.parse_args()
    if args.url:
        shoot(args.url, args.out)
    else:
        with tempfile.TemporaryDirectory() as folder:
            server, url = start_app(Path(folder) / "app.log")
            try:
                shoot(url, args.out)
            finally:
                server.terminate()
                server.wait(timeout=60)
    size = args.out.stat().st_size
    print(f"{args.out}: {size:,} bytes")
    return 0 if size < MAX_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
