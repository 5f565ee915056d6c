"""First start of `python app.py --tiny` on a fresh clone: no cache, the shipped tiny models copied
(never trained), every step printed as it begins, /moderate served; on a Space without a bucket or
a backup the banner says that labels vanish at restart."""

from __future__ import annotations

import json

import httpx
from helpers import start_app_process, stop_app_process

from guard.testing.tiny import BREAK_IN


def test_a_fresh_start_prints_its_steps_copies_the_shipped_models_and_serves(tmp_path):
    empty_cache = tmp_path / "cache"
    server, url = start_app_process(
        tmp_path, env={"GUARD_LAB_TINY_DIR": str(empty_cache), "SPACE_ID": "someone/guard-lab",
                       "GUARD_LAB_DB": str(tmp_path / "labels.db"),
                       "GUARD_LAB_REVIEWERS": "ana:correct-horse-battery"})
    try:
        from gradio_client import Client

        result = Client(url, verbose=False).predict(
            json.dumps([{"role": "user", "content": BREAK_IN}]), [], "", 0.5,
            api_name="/moderate")
        page = httpx.get(url.rstrip("/") + "/config", timeout=60).text  # the components
    finally:
        stop_app_process(server)
    assert result["verdict"] == "safe"
    log = (tmp_path / "app.log").read_text()
    steps = [line for line in log.splitlines() if line.startswith("Guard Lab [")]
    assert [s.split("]")[0] for s in steps] == [f"Guard Lab [{n}/6" for n in range(1, 7)], log
    assert "copying the prebuilt model" in log and "training it" not in log
    assert "Guard Lab: ready after" in log
    assert sorted(p.name for p in empty_cache.iterdir() if p.is_dir()) == [
        "llama-guard-4-tiny", "prompt-guard-2-tiny"]
    # The Space keeps labels on its own disk here: the banner says they vanish at restart.
    assert "vanish when this Space restarts" in page
