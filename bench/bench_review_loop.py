"""The review loop in chromium against the bare API, on the same server (tiny models).

Prints `review_loop_page_vs_api: ratio=X.XX` first (the page's median divided by the API's;
above 1 means the page costs more than the round trips it has to make), then the milliseconds.

Page: a reviewer works a queue from the keyboard (Alt+F, then Ctrl+Enter); each item is timed
in the page from the Ctrl+Enter keydown to the next item being ready for keys (its text shown
and its label choice clear). API: `/queue_submit` then `/queue_next` through
gradio_client, on a second queue of the same server, timed around the two calls.

    python bench/bench_review_loop.py [--items 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import app  # noqa: E402
from guard.engines.service import tiny_guards  # noqa: E402
from labels import Store  # noqa: E402
from labels import queues as q  # noqa: E402

# The page's own clock: Ctrl+Enter keydown to the next item shown with the focus in its form.
TIMER = r"""() => {
  window.__loop = []; let started = null, before = null;
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.ctrlKey) {
      started = performance.now();
      before = (document.querySelector('#gl-queue-item') || {}).textContent;
    }
  }, true);
  const check = () => {
    if (started === null) return;
    const item = document.querySelector('#gl-queue-item');
    // Ready for keys: the new item is shown and its label choice is clear (the shortcuts act
    // on the form on the screen, which the page scrolls to).
    const ready = item && item.textContent !== before &&
      !document.querySelector('#gl-queue-label input:checked');
    if (ready) { window.__loop.push(performance.now() - started); started = null; }
  };
  new MutationObserver(check).observe(document.documentElement,
    {subtree: true, childList: true, characterData: true});
  document.addEventListener('focusin', check, true);
}"""


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def fill(store: Store, folder: Path, name: str, items: int) -> None:
    path = folder / f"{name}.csv"
    path.write_text("prompt\n" + "".join(f"{name} request {i}: how do I fold a paper crane?\n"
                                         for i in range(items + 1)))
    q.create_from_file(store, name, path, format="csv")


def page_loop(url: str, items: int) -> list[float]:
    from helpers import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(url)
        page.wait_for_selector("#gl-queue-start")
        page.locator("#gl-reviewer-name input").fill("ana")
        page.locator("#gl-queue-name input").fill("page")
        page.locator("#gl-queue-start").click()
        page.wait_for_selector("#gl-queue-item", timeout=120_000)
        page.evaluate(TIMER)
        for n in range(1, items + 1):
            page.keyboard.press("Alt+KeyF")
            page.keyboard.press("Control+Enter")
            page.wait_for_function("(n) => window.__loop.length >= n", arg=n, timeout=120_000)
        times = page.evaluate("() => window.__loop")
        browser.close()
    return list(times)


def api_loop(url: str, items: int) -> list[float]:
    from gradio_client import Client

    client = Client(url, verbose=False)
    item = client.predict("bob", "api", api_name="/queue_next")["item"]
    times = []
    for _ in range(items):
        started = time.perf_counter()
        client.predict("bob", "api", item["id"], "safe", "", "", api_name="/queue_submit")
        item = client.predict("bob", "api", api_name="/queue_next")["item"]
        times.append((time.perf_counter() - started) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30)
    args = parser.parse_args()
    from helpers import free_port, patient_gradio_start

    folder = Path(tempfile.mkdtemp(prefix="guard-lab-bench-loop-"))
    guards = tiny_guards(os.environ.get("GUARD_LAB_TINY_DIR") or REPO / ".cache" / "tiny")
    with Store(folder / "labels.db") as store:
        fill(store, folder, "page", args.items)
        fill(store, folder, "api", args.items)
        demo = app.build_demo(guards, tiny=True, store=store,
                              swatch_dir=str(folder / "swatches"))
        with patient_gradio_start():
            _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(),
                                   quiet=True)
        try:
            api = api_loop(url, args.items)
            page = page_loop(url, args.items)
        finally:
            demo.close()
    ratio = statistics.median(page) / statistics.median(api)
    print(f"review_loop_page_vs_api: ratio={ratio:.2f}")
    print(f"  page (Ctrl+Enter to the next item ready for keys, chromium): median "
          f"{statistics.median(page):.0f} ms, p95 {p95(page):.0f} ms, max {max(page):.0f} ms "
          f"over {len(page)} items")
    print(f"  api (/queue_submit + /queue_next, gradio_client): median "
          f"{statistics.median(api):.0f} ms, p95 {p95(api):.0f} ms over {len(api)} items",
          flush=True)


if __name__ == "__main__":
    main()
