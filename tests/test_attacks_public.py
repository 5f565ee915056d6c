"""A public Space that reads nothing of the server, leaks nothing of the reviewers, and stays up.

Each test attacks `python app.py --tiny` in its own process, as the issue of that name found it
(2026-12-07), one table row at a time; `say` what a caller gets back, with time and peak memory
as generous bounds, not benchmarks. The figures before the fixes are in each test's comment;
what each run measured goes to artifacts/attacks_public.json. This test plays the trusted proxy:
it appends the visitor's address to whatever X-Forwarded-For the visitor wrote.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import helpers
import httpx
import pytest
from gradio_client import Client, handle_file
from helpers import HTTP_S, REPO, Figures, start_app_process, stop_app_process
from PIL import Image

from guard.testing.tiny import BENIGN, VIOLENT

pytestmark = pytest.mark.server

ARTIFACTS = REPO / "artifacts"
MB = 1000 * 1000
SECRET_LINE = "card 4111 1111 1111 1111, password hunter2"  # a file the caller did not send
FIGURES = Figures("attacks_public.json")
record = FIGURES.record


class Attack(helpers.Attack):
    figures = FIGURES


def proxied(address: str, forged: str = "") -> dict[str, str]:
    """The header a trusted proxy passes on: what the client wrote, then the client's address."""
    return {"X-Forwarded-For": f"{forged}, {address}" if forged else address}


def visitor(url: str, address: str, forged: str = "") -> Client:
    return Client(url, verbose=False, headers=proxied(address, forged))


def say(text: str) -> str:
    return json.dumps([{"role": "user", "content": text}])


def call_raw(url: str, name: str, data: list, headers: dict[str, str]) -> str:
    """An endpoint called by hand (no gradio_client to tidy the inputs): its final event."""
    posted = httpx.post(f"{url}gradio_api/call/{name}", json={"data": data}, headers=headers,
                        timeout=60)
    posted.raise_for_status()
    event = posted.json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{name}/{event}", headers=headers, timeout=120).text


@pytest.fixture(scope="module")
def open_app(tmp_path_factory, tiny_dirs):
    """Open mode (no accounts: anyone is a reviewer), behind a trusted proxy, small limits."""
    folder = tmp_path_factory.mktemp("public")
    env = {"GUARD_LAB_TRUST_PROXY": "1", "GUARD_LAB_PER_VISITOR": "2",
           "GUARD_LAB_UPLOAD_QUOTA": "30mb", "GUARD_LAB_UPLOAD_TTL": "12",
           "GUARD_LAB_SESSIONS_PER_VISITOR": "5", "GUARD_LAB_DECODE_CONCURRENCY": "2"}
    server, url = start_app_process(folder, "--db", str(folder / "labels.db"), env=env)
    yield server, url, folder
    stop_app_process(server)


@pytest.fixture(scope="module")
def accounts_app(tmp_path_factory, tiny_dirs):
    folder = tmp_path_factory.mktemp("accounts")
    env = {"GUARD_LAB_TRUST_PROXY": "1", "GUARD_LAB_REVIEWERS": "alice:secret,bob:other"}
    server, url = start_app_process(folder, "--db", str(folder / "labels.db"), env=env)
    yield server, url, folder
    stop_app_process(server)


# --- 1. no endpoint takes a server path -------------------------------------------------------


def test_queue_create_reads_no_server_path(open_app, tmp_path):
    """Before: /etc/passwd's first line quoted in the error, a JSONL elsewhere on the server
    read row by row, whether a path exists told apart, full paths in `source.file`."""
    server, url, folder = open_app
    elsewhere = folder / "elsewhere.jsonl"  # on the server, never uploaded
    elsewhere.write_text(json.dumps({"prompt": SECRET_LINE}) + "\n")
    headers = proxied("10.20.0.1")
    answers = []
    with Attack(server, "queue_create_server_paths"):
        for path in (str(elsewhere), "/etc/passwd", "/etc", "/no/such/file.jsonl"):
            for value in ({"path": path, "meta": {"_type": "gradio.FileData"}}, path):
                answers.append(call_raw(url, "queue_create", [
                    "mallory", f"q{len(answers)}", "", "", "", None, 1, value, "csv"], headers))
    for answer in answers:
        assert "event: error" in answer and "event: complete" not in answer, answer[:300]
        assert "hunter2" not in answer and "root:" not in answer
        assert "Is a directory" not in answer and "No such file" not in answer
    client = visitor(url, "10.20.0.1")
    assert client.predict("mallory", api_name="/queue_list") == []
    record("queue_create_server_paths", refused=len(answers), leaked=0)


def test_only_the_visitors_own_uploads_are_read_and_answers_name_files(open_app, tmp_path):
    _, url, _ = open_app
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"prompt": BENIGN}) + "\n")
    owner, other = visitor(url, "10.20.1.1"), visitor(url, "10.20.1.2")
    made = owner.predict("ana", "mine", "", "", "", None, 1, handle_file(str(data)), "jsonl",
                         api_name="/queue_create")
    assert made["added"] == 1
    listed = {q["name"]: q for q in owner.predict("ana", api_name="/queue_list")}
    assert listed["mine"]["source"]["file"] == "mine.jsonl"  # the name, not the server's path
    # Another visitor who learned the upload's path cannot make the server read it.
    uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": ("mine.jsonl", b"x")},
                          headers=proxied("10.20.1.1")).json()[0]
    stolen = call_raw(url, "queue_create", [
        "eve", "stolen", "", "", "", None, 1,
        {"path": uploaded, "meta": {"_type": "gradio.FileData"}}, "jsonl"], proxied("10.20.1.2"))
    assert "not a file you uploaded" in stolen and uploaded not in stolen
    assert [q["name"] for q in other.predict("eve", api_name="/queue_list")] == ["mine"]


def test_v1_model_and_run_reports_carry_no_server_path(open_app, tmp_path):
    _, url, folder = open_app
    answer = httpx.post(f"{url}v1/moderations", json={"input": BENIGN},
                        headers=proxied("10.20.2.1"), timeout=60).json()
    assert not answer["model"].startswith("/") and "/" not in answer["model"]  # before: a path
    data = tmp_path / "two.csv"
    data.write_text(f'prompt,label\n"{BENIGN}",safe\n"{VIOLENT}",unsafe\n')
    client = visitor(url, "10.20.2.1")
    report = client.predict("upload", handle_file(str(data)), "csv", "paths", None, 8, ["S1"],
                            0.5, "ana", api_name="/evaluate")[5]
    assert report["run"]["dataset"] == "two.csv"  # before: the upload's full server path
    assert str(tmp_path) not in json.dumps(report) and "/gradio" not in json.dumps(report)


# --- 2. a Space without sign-in is not open mode -------------------------------------------------


def test_a_space_without_sign_in_offers_no_reviewer_feature(tmp_path, tiny_dirs):
    """Before: every visitor was a reviewer (queues, exports, server files, Tune tab on)."""
    server, url = start_app_process(tmp_path, env={"SPACE_ID": "someone/guard-lab",
                                                   "GUARD_LAB_HOST": "127.0.0.1"})
    try:
        client = visitor(url, "10.21.0.1")
        for name, args in (("queue_create", ["x"] * 9), ("list_labels", [""] * 10),
                           ("tune_status", [""]), ("evaluate", ["upload"] * 9)):
            with pytest.raises(Exception, match="Cannot find a function|api_name"):
                client.predict(*args, api_name=f"/{name}")
        page = httpx.get(url + "config", timeout=30).text
        assert "Reviewing is off on this public Space" in page
        # The upload limit is what the app reads here (images, 20 MiB; no datasets): refused.
        blob = os.urandom(21 * 1024 * 1024)
        big = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", blob)},
                         headers=proxied("10.21.0.1"), timeout=120)
        assert big.status_code == 413
    finally:
        stop_app_process(server)


# --- 3. /tune_status ----------------------------------------------------------------------------


def test_tune_status_is_for_reviewers(accounts_app):
    """Before: anyone read the label counts, the adapter and database folders, flipped texts."""
    _, url, folder = accounts_app
    anonymous = visitor(url, "10.22.0.1")
    with pytest.raises(Exception, match="Sign in as a reviewer") as refused:
        anonymous.predict("", api_name="/tune_status")
    assert str(folder) not in str(refused.value) and "usable" not in str(refused.value)
    alice = visitor(url, "10.22.0.2")
    alice.predict("alice", "secret", api_name="/reviewer_sign_in")
    status = alice.predict("", api_name="/tune_status")
    assert str(folder) not in json.dumps(status)


# --- 4. decoding, a few at a time and on the visitor's share ---------------------------------------


def test_image_decoding_is_limited_and_counted_per_visitor(open_app, tmp_path):
    """Before: /attach_image had no concurrency limit; /v1 decoded before taking its slot."""
    server, url, _ = open_app
    picture = tmp_path / "big.png"
    Image.linear_gradient("L").resize((5000, 4000)).convert("RGB").save(picture)  # 60 MB decoded
    greedy = [visitor(url, "10.23.0.1") for _ in range(4)]
    outcomes = []

    def attach(client: Client) -> str:
        try:
            client.predict(handle_file(str(picture)), api_name="/attach_image")
            return "ok"
        except httpx.HTTPStatusError as exc:  # the queue's refusal: its `detail`
            return f"{exc.response.status_code} {exc.response.json()['detail']}"

    with Attack(server, "attach_image_4_at_once_one_visitor") as attack, \
            ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attach, greedy))
    assert "ok" in outcomes
    refused = [o for o in outcomes if o != "ok"]
    assert all(o.startswith("400 You already have") and "at most 2 per visitor" in o
               for o in refused), refused
    record("attach_image_4_at_once_one_visitor", ok=outcomes.count("ok"), refused=len(refused),
           seconds=round(attack.seconds, 2), peak_growth_mb=round(attack.grew_mb, 1))
    buffer = io.BytesIO()
    Image.open(picture).save(buffer, format="PNG")
    url_data = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = {"input": [{"type": "text", "text": "What is in this picture?"},
                      *[{"type": "image_url", "image_url": {"url": url_data}}] * 3]}
    with Attack(server, "v1_three_images_six_visitors") as attack, ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda n: httpx.post(
            f"{url}v1/moderations", json=body, headers=proxied(f"10.23.1.{n}"),
            timeout=300).status_code, range(6)))
    assert set(codes) <= {200, 400, 413, 503}, codes
    assert attack.grew_mb < 2500  # six decodes of three 20-megapixel images, two at a time


# --- 5. one visitor identity ---------------------------------------------------------------------


def test_a_forged_forwarded_address_is_not_another_visitor(open_app):
    """Before: 12 concurrent /v1 requests, each with another forged first address, 12/12 ran
    (limit 2)."""
    _, url, _ = open_app
    # Long enough that the first two are still running when the rest arrive (they leave
    # together, from a barrier), short enough for a loaded machine to finish the two.
    body = {"input": [f"{VIOLENT} {i}" * 20 for i in range(16)]}
    together = threading.Barrier(12)

    def post(n: int) -> int:
        together.wait()
        return httpx.post(f"{url}v1/moderations", json=body, timeout=HTTP_S,
                          headers=proxied("10.24.0.1", forged=f"198.51.100.{n}")).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(post, range(12)))
    assert codes.count(429) >= 6 and set(codes) <= {200, 429}, codes
    record("v1_12_forged_addresses", accepted=codes.count(200), refused=codes.count(429))


def test_one_attacker_cannot_lock_the_reviewers_out(accounts_app):
    """Before: 21 wrong passwords under 21 names locked every reviewer out for 15 minutes."""
    _, url, _ = accounts_app
    attacker = visitor(url, "10.25.0.1", forged="203.0.113.9")
    said = []
    for n in range(21):
        try:
            attacker.predict(f"user{n}" if n % 2 else "bob", "guess", api_name="/reviewer_sign_in")
        except Exception as exc:  # noqa: BLE001
            said.append(str(exc))
    assert any("Too many failed sign-ins" in s for s in said)
    for name, password, address in (("alice", "secret", "10.25.0.2"),
                                     ("bob", "other", "10.25.0.3")):
        reviewer = visitor(url, address, forged="10.25.0.1")  # even naming the attacker's
        reviewer.predict(name, password, api_name="/reviewer_sign_in")
        assert reviewer.predict("", "any", "", "any", "", "", "", "", "", 1,
                                api_name="/list_labels") is not None
    record("sign_in_lockout", attacker_refusals=len(said), reviewers_locked_out=0)


# --- 6. uploads ----------------------------------------------------------------------------------


def upload(url: str, address: str, size: int, name: str = "blob.bin") -> httpx.Response:
    return httpx.post(f"{url}gradio_api/upload", files={"files": (name, os.urandom(size))},
                      headers=proxied(address), timeout=120)


def test_uploads_have_a_quota_per_visitor_and_are_swept(open_app):
    """Before: 20 x 49 MB accepted from one visitor in 12 s (981 MB), kept 2 hours."""
    server, url, _ = open_app
    with Attack(server, "uploads_20_x_12mb_one_visitor") as attack:
        responses = [upload(url, "10.26.0.1", 12 * MB) for _ in range(20)]
    kept = [r.json()[0] for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(kept) == 2 and all(r.status_code == 413 for r in refused)
    assert "GUARD_LAB_UPLOAD_QUOTA" in refused[0].text and "/" not in refused[0].text.split(
        "(")[0]
    assert upload(url, "10.26.0.2", 12 * MB).status_code == 200  # another visitor is not held
    record("uploads_20_x_12mb_one_visitor", accepted_mb=len(kept) * 12,
           seconds=round(attack.seconds, 2), peak_growth_mb=round(attack.grew_mb, 1))
    # Nothing holds them: they go within the sweep (GUARD_LAB_UPLOAD_TTL=12 s here), and the
    # visitor may upload again.
    deadline = time.monotonic() + 90
    while any(os.path.exists(p) for p in kept) and time.monotonic() < deadline:
        time.sleep(1)
    assert not any(os.path.exists(p) for p in kept)
    assert upload(url, "10.26.0.1", 12 * MB).status_code == 200


def test_an_image_a_session_holds_is_not_swept(open_app, tmp_path):
    _, url, _ = open_app
    picture = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture)
    headers = proxied("10.26.1.1")
    uploaded = httpx.post(f"{url}gradio_api/upload", headers=headers, timeout=60,
                          files={"files": ("red.png", picture.read_bytes())}).json()[0]
    attached = call_raw(url, "attach_image", [
        {"path": uploaded, "meta": {"_type": "gradio.FileData"}}], headers)
    assert "event: complete" in attached, attached[:300]  # the composer's state holds it
    time.sleep(30)  # past GUARD_LAB_UPLOAD_TTL (12 s) and two sweeps
    assert os.path.exists(uploaded)


# --- 7. a /v1 request of many inputs does not hold the slot -----------------------------------------


def test_a_long_v1_request_lets_another_visitor_through(open_app):
    """Before: 32 near-limit inputs held the slot 25.4 s; a "hello" sent 3 s later waited 22.4 s
    (the whole request: it came back after it)."""
    _, url, _ = open_app
    # The tiny model reads 2,048 tokens; 32 inputs (the most one request takes) of about 800
    # hold the slot for seconds even on an idle machine.
    long_inputs = {"input": [f"{VIOLENT} {i} " * 60 for i in range(32)]}
    timings: dict[str, float] = {}

    def long_request() -> int:
        started = time.monotonic()
        code = httpx.post(f"{url}v1/moderations", json=long_inputs, timeout=600,
                          headers=proxied("10.27.0.1")).status_code
        timings["long"] = time.monotonic() - started
        timings["long_done"] = time.monotonic()
        return code

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(long_request)
        time.sleep(0.5)  # let it take the slot; the overlap is checked below, not assumed
        started = timings["hello_sent"] = time.monotonic()
        hello = httpx.post(f"{url}v1/moderations", json={"input": "hello"}, timeout=600,
                           headers=proxied("10.27.0.2"))
        timings["hello"] = time.monotonic() - started
        timings["hello_done"] = time.monotonic()
        assert running.result() == 200
    assert hello.status_code == 200, hello.text
    assert timings["hello_sent"] < timings["long_done"], ("the long request ended before the "
                                                       f"hello was sent: {timings}")
    assert timings["hello_done"] < timings["long_done"], timings
    record("v1_hello_behind_32_long_inputs", hello_s=round(timings["hello"], 2),
           long_s=round(timings["long"], 2))


# --- 13. live sessions per visitor -----------------------------------------------------------------


def test_live_sessions_per_visitor_are_capped(open_app):
    """Before: 300 page sessions from one address, +0.72 MB each, all held for 2 hours."""
    server, url, _ = open_app
    first = visitor(url, "10.28.0.1")
    first.predict("user", BENIGN, api_name="/add_turn")  # its conversation: one user turn
    first.predict("assistant", "Mix flour and water.", api_name="/add_turn")  # still held
    with Attack(server, "sessions_60_one_visitor") as attack:
        for _ in range(60):  # each a session of its own (GUARD_LAB_SESSIONS_PER_VISITOR=5 here)
            visitor(url, "10.28.0.1").predict(api_name="/categories_all")
    # The oldest session was ended: its conversation is gone, so a user turn comes first again.
    with pytest.raises(Exception, match="starts with the user"):
        first.predict("assistant", "Then bake it.", api_name="/add_turn")
    assert attack.grew_mb < 150  # a bound: 60 sessions measured +36 MB before, +37 MB after
    record("sessions_60_one_visitor", live_at_most=5, seconds=round(attack.seconds, 2),
           peak_growth_mb=round(attack.grew_mb, 1))
