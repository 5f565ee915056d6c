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


def test_launch_waits_for_its_own_server_when_the_first_answers_are_slow(guards, tmp_path,
                                                                           monkeypatch):
    """Gradio's launch() asks its own address once it has started and, on the first timeout,
    refuses to start ("When localhost is not accessible, a shareable link must be created"):
    a loaded machine failed so. The page's launch asks again until the server answers."""
    from helpers import launch_app

    real_head = httpx.head
    slow = {"left": 2}

    def head(url, **kwargs):  # the first two answers take longer than any timeout given
        if slow["left"]:
            slow["left"] -= 1
            raise httpx.ReadTimeout("the machine is busy")
        return real_head(url, **kwargs)

    monkeypatch.setattr(httpx, "head", head)
    demo, url = launch_app(guards, tmp_path)
    try:
        assert slow["left"] == 0  # the slow answers were asked, and launch went on
        assert httpx.get(url, timeout=60).status_code == 200
    finally:
        demo.close()
