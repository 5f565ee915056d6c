"""A hostile visitor against a running public demo: it cannot exhaust, stall or read it.

The app runs with the tiny models in its own process (`python app.py --tiny`), so its memory
is measured where it lives: the growth of its peak resident memory (VmHWM) over an attack.
Times and memory are bounds with generous margins, not benchmarks; the figures before the
limits existed are in the comments (issue "A public demo that hostile visitors cannot exhaust,
stall or read", measured 2026-12-01 on this machine). The memory bounds tell before from
after; the time bounds are very generous, to hold on a loaded machine too (the suite with four
busy loops beside it): they catch a call that hangs or works for minutes. Each test writes
what it measured to artifacts/attacks.json for the record.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import helpers
import httpx
import pytest
from gradio_client import Client, handle_file
from helpers import HTTP_S, REPO, Figures, patient_client, start_app_process, stop_app_process
from PIL import Image

from guard.testing.tiny import BENIGN, VIOLENT

pytestmark = pytest.mark.server  # `demo` is `python app.py --tiny` in its own process

ARTIFACTS = REPO / "artifacts"
MB = 1024 * 1024
FIGURES = Figures("attacks.json")
record = FIGURES.record


class Attack(helpers.Attack):
    figures = FIGURES


def say(text: str) -> str:
    return json.dumps([{"role": "user", "content": text}])


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_dirs):
    """One public instance, as a Space runs it: visitors are told apart by X-Forwarded-For."""
    folder = tmp_path_factory.mktemp("attacks")
    env = {"GUARD_LAB_TRUST_PROXY": "1", "GUARD_LAB_QUEUE_SIZE": "64",
           "GUARD_LAB_PER_VISITOR": "2", "GUARD_LAB_MAX_FILE_SIZE": "20mb"}
    server, url = start_app_process(folder, "--db", str(folder / "labels.db"), env=env)
    client = patient_client(url, headers={"X-Forwarded-For": "10.0.0.1"})
    client.predict(say(BENIGN), [], "", None, api_name="/moderate")  # warm up
    yield server, url, client, folder
    stop_app_process(server)


def visitor(url: str, n: int) -> Client:
    return patient_client(url, headers={"X-Forwarded-For": f"10.1.{n // 250}.{n % 250}"})


# --- memory: refused before the expensive work ------------------------------------------------


def test_a_30_mb_message_is_refused_by_its_length(demo):
    server, _, client, _ = demo
    # before: 41-45 s, +5.2 GB
    with Attack(server, "moderate_30mb_message") as attack, \
            pytest.raises(Exception, match="characters"):
        client.predict(say("a" * (30 * MB)), [], "", None, api_name="/moderate")
    assert attack.seconds < 120 and attack.grew_mb < 1024


def test_attribution_of_201_turns_is_refused_before_batching(demo):
    server, _, client, _ = demo
    turns = [{"role": ("user", "assistant")[i % 2], "content": f"message {i}"}
             for i in range(201)]
    # before: 20 s, +3.5 GB
    with Attack(server, "attribution_201_turns") as attack, \
            pytest.raises(Exception, match="at most 64"):
        client.predict(json.dumps(turns), [], "", None, api_name="/attribution")
    assert attack.seconds < 120 and attack.grew_mb < 300


def test_the_largest_sweep_runs_in_budgeted_batches(demo):
    server, _, client, _ = demo
    with Attack(server, "sweep_29_variants") as attack:  # before: +785 MB
        result = client.predict(say(VIOLENT), [], "", None, True, api_name="/sweep")
    assert len(result["variants"]) == 29
    assert attack.grew_mb < 500


def test_a_gzip_bomb_is_refused_while_streaming(demo, tmp_path):
    server, _, client, _ = demo
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b"prompt,label\n")
        row = b'"' + b"a" * 100_000 + b'",safe\n'
        for _ in range(1500):  # 150 MB decompressed, ~150 KB on disk
            f.write(row)
    # before: a 420 KB file, +1.18 GB
    with Attack(server, "evaluate_gzip_bomb") as attack, \
            pytest.raises(Exception, match="100 MB once decompressed"):
        client.predict("upload", handle_file(str(bomb)), "csv", "bomb", None, 8, ["S1"], 0.5,
                       api_name="/evaluate")
    assert bomb.stat().st_size < 2 * MB and attack.grew_mb < 300


def test_evaluation_batch_sizes_are_bounded(demo, tmp_path):
    server, _, client, _ = demo
    data = tmp_path / "forty.csv"
    data.write_text("prompt,label\n" + "".join(
        f'"{VIOLENT if i % 2 else BENIGN} {i}",{"unsafe" if i % 2 else "safe"}\n'
        for i in range(40)))
    with pytest.raises(Exception, match="at most 64"):
        client.predict("upload", handle_file(str(data)), "csv", "huge", None, 1000, ["S1"], 0.5,
                       api_name="/evaluate")
    with Attack(server, "evaluate_batch_40") as attack:  # before: +695 MB
        status, *_ = client.predict("upload", handle_file(str(data)), "csv", "forty", None, 40,
                                    ["S1"], 0.5, api_name="/evaluate")
    assert status.startswith("Run 'forty': judged 40 rows") and attack.grew_mb < 500


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_huge_image_is_refused_from_its_header(demo, tmp_path):
    server, _, client, _ = demo
    big = tmp_path / "huge.png"
    big.write_bytes(png(12000, 12000))
    client.predict(api_name="/clear_conversation")
    with Attack(server, "attach_image_12000x12000") as attack:  # before: ~0.7 GB each
        for _ in range(6):  # before: six at once, 4.1 GB
            with pytest.raises(Exception, match="megapixels"):
                client.predict(handle_file(str(big)), api_name="/attach_image")
    assert big.stat().st_size < MB and attack.grew_mb < 300


def test_an_upload_over_the_size_limit_is_refused(demo, tmp_path):
    _, url, _, _ = demo
    blob = tmp_path / "big.png"
    blob.write_bytes(os.urandom(21 * MB))  # before: 200 MB accepted
    with open(blob, "rb") as f:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", f)},
                              timeout=HTTP_S)
    assert response.status_code == 413, response.text


# --- fairness ---------------------------------------------------------------------------------


def test_a_hostile_call_no_longer_holds_the_model(demo):
    """Before: a 30 MB message held the slot 105-144 s; a normal call 8 s later waited 99 s."""
    _, url, _, _ = demo
    hostile, normal = visitor(url, 1), visitor(url, 2)
    with ThreadPoolExecutor(2) as pool:
        attack = pool.submit(lambda: hostile.predict(say("b" * (30 * MB)), [], "", None,
                                                     api_name="/moderate"))
        time.sleep(1)
        started = time.monotonic()
        result = normal.predict(say(VIOLENT), [], "", None, api_name="/moderate")
        waited = time.monotonic() - started
        with pytest.raises(Exception, match="characters"):
            attack.result()
    assert result["verdict"] == "unsafe" and waited < 90  # before: 99 s on an idle machine
    record("normal_call_after_a_30mb_one", seconds=round(waited, 2))


def test_one_visitor_cannot_queue_more_than_their_share(demo):
    _, url, _, _ = demo
    greedy = [visitor(url, 7) for _ in range(5)]  # five tabs of one visitor
    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(lambda c: _outcome(
            lambda: c.predict(say(VIOLENT), [], "", None, True, api_name="/sweep")), greedy))
    refused = [o for o in outcomes if "waiting or running" in o]
    assert refused and all(o.startswith("400 You already have") and "at most 2 per visitor" in o
                           for o in refused)
    assert outcomes.count("ok") >= 2


def _outcome(call) -> str:
    """'ok', or the refusal: the page shows a queue refusal's `detail` (HTTP 400) as its toast."""
    try:
        call()
        return "ok"
    except httpx.HTTPStatusError as exc:
        return f"{exc.response.status_code} {exc.response.json()['detail']}"
    except Exception as exc:
        return str(exc)


def test_fifty_visitors_at_once_are_all_answered(demo):
    """What held before must hold: 50 concurrent /moderate, each answered with a verdict."""
    _, url, _, _ = demo
    clients = [visitor(url, 100 + i) for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda c: c.predict(say(BENIGN), [], "", None,
                                                     api_name="/moderate"), clients))
    assert [r["verdict"] for r in results] == ["safe"] * 50


def test_a_full_queue_says_so(tiny_dirs, tmp_path):
    env = {"GUARD_LAB_TRUST_PROXY": "1", "GUARD_LAB_QUEUE_SIZE": "2"}
    server, url = start_app_process(tmp_path, "--no-labels", env=env)
    try:
        clients = [visitor(url, 300 + i) for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda c: _outcome(lambda: c.predict(
                say(VIOLENT), [], "", None, True, api_name="/sweep")), clients))
        busy = [o for o in outcomes if "The demo is busy" in o]
        assert busy and "ok" in outcomes
        assert all(o.startswith("400 ") and "2 runs are already waiting" in o for o in busy)
    finally:
        stop_app_process(server)


# --- text is text, housekeeping ---------------------------------------------------------------


def test_run_names_are_shown_as_text(demo, tmp_path):
    _, _, client, _ = demo
    data = tmp_path / "one.csv"
    data.write_text(f'prompt,label\n"{BENIGN}",safe\n')
    name = '<img src="http://198.51.100.7/x.png"> [click](http://198.51.100.7/)'
    client.predict("upload", handle_file(str(data)), "csv", name, None, 8, ["S1"], 0.5,
                   api_name="/evaluate")
    text, _ = client.predict(name, name, api_name="/compare_runs")
    assert "&lt;img" in text and "<img" not in text


def test_expected_refusals_log_one_line_and_no_traceback(demo):
    _, _, client, folder = demo
    before = (folder / "app.log").read_text()
    for bad in ("not json", '[{"role": "assistant", "content": "hi"}]'):
        with pytest.raises(Exception):  # noqa: B017 (the refusal's text is tested elsewhere)
            client.predict(bad, [], "", None, api_name="/moderate")
    added = (folder / "app.log").read_text()[len(before):]
    assert "Traceback" not in added
