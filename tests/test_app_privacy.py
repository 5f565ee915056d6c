"""Private means private: exports, reviewer sessions and sign-ins against a running app.

Real clients throughout: `gradio_client.Client` for the endpoints, `httpx` for the download
links, a real SQLite store holding a reviewer's note that nobody else may read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from gradio_client import Client
from helpers import HTTP_S, launch_app, patient_client

from guard_app.exports import Downloads, LinkRefused
from guard_app.labeled.logic import LIST_HEADERS
from guard_app.moderate import logic as moderate
from guard_app.moderate.examples import example_turns, write_swatches
from guard_app.review import logic as review
from guard_app.reviewers import (
    EXPIRED,
    Limits,
    Mode,
    NotAReviewer,
    ReviewerGate,
    TooManySignIns,
)

SECRET = "alice's secret note"
ACCOUNTS = {"alice": "secret", "bob": "other"}
FILTERS = ("", "any", "", "any", "", "", "", "", "", 1)  # /list_labels: typed name, filters, page


@pytest.fixture(scope="module")
def harmful(guards, tmp_path_factory):
    swatches = write_swatches(tmp_path_factory.mktemp("swatches"))
    return moderate.run_guards(guards, None, example_turns("Harmful request", swatches), moderate.CODES, [],
                          0.5, None)


@contextlib.contextmanager
def serving(guards, folder: Path, run, limits: Limits, clock=None):
    """The app with accounts and one labelled example carrying alice's secret note; `clock`, when
    given, is the reviewer gate's (sessions end when the test moves it)."""
    from labels import Store

    with Store(folder / "labels.db") as store:
        review.save_review(store, run, 0.5, reviewer="alice", model_right="right",
                           label="unsafe", categories=["S1"], note=SECRET, max_images=5)
        gate = ReviewerGate.from_config(ACCOUNTS, on_space=False, limits=limits)
        if clock is not None:
            gate = dataclasses.replace(gate, clock=clock)
        demo, url = launch_app(guards, folder, store=store, reviewers=gate)
        try:
            yield url, gate
        finally:
            demo.close()


@pytest.fixture(scope="module")
def served(guards, harmful, tmp_path_factory):
    """Default TTLs; sign-in limits small enough to reach (each test signs in its own names)."""
    limits = Limits(account_failures=3, address_failures=50)
    with serving(guards, tmp_path_factory.mktemp("served"), harmful, limits) as served:
        yield served


def signed_in(url: str, name: str = "alice", password: str = "secret") -> Client:
    client = patient_client(url)
    client.predict(name, password, api_name="/reviewer_sign_in")
    return client


def export_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("guard-lab-export-*"))


def export(client: Client) -> tuple[str, Path]:
    """(link, its temporary folder) for a fresh JSONL export."""
    before = export_folders()
    html, link = client.predict("", "jsonl", api_name="/export_labels")
    assert f'href="{link}"' in html and "works once" in html
    [folder] = export_folders() - before
    return link, folder


def gone(folder: Path, timeout: float = 120.0) -> bool:
    """The folder is deleted (after the response is sent, or by the link's timer): waits until
    it is, with a ceiling generous enough for a loaded machine."""
    deadline = time.monotonic() + timeout
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not folder.exists()


def test_the_export_link_works_once_for_its_reviewer_then_the_file_is_gone(served):
    url, _ = served
    with pytest.raises(Exception, match="Sign in as a reviewer to export labels"):
        patient_client(url).predict("alice", "jsonl", api_name="/export_labels")
    link, folder = export(signed_in(url))
    assert link.startswith("gradio_api/guard-lab/export/")
    [exported] = folder.iterdir()

    with httpx.Client(base_url=url, timeout=HTTP_S) as anonymous:
        # Guessing: a well-formed unknown link, a malformed one, a forged signature.
        file_id, expires, signature = link.rsplit("/", 1)[1].split(".")
        for token, status, says in (
                (f"AAAAAAAAAAAAAAAAAAAAAAAA.{expires}.{signature}", 404, "already used"),
                ("not-a-link", 403, "not valid"),
                (f"{file_id}.{expires}.{signature[:-2]}xx", 403, "not valid"),
                (f"{file_id}.{int(expires) + 600_000}.{signature}", 403, "not valid")):
            refused = anonymous.get(f"gradio_api/guard-lab/export/{token}")
            assert (refused.status_code, SECRET in refused.text) == (status, False)
            assert says in refused.text and "Export again" in refused.text
        # Nor does Gradio's own file route hand it out: it was never in Gradio's cache.
        assert anonymous.get(f"gradio_api/file={exported}").status_code in (403, 404)

    with httpx.Client(timeout=HTTP_S) as reviewer:
        download = reviewer.get(urljoin(url, link))
        assert download.status_code == 200
        assert exported.name in download.headers["content-disposition"]
        assert SECRET in download.text and download.text.count("\n") == 1
        again = reviewer.get(urljoin(url, link))
        assert again.status_code == 404 and "already used" in again.text
    assert gone(folder)


def test_signing_out_ends_the_session_server_side_and_kills_its_links(served):
    url, gate = served
    alice = signed_in(url)
    # Whoever knows a signed-in session's hash is that reviewer, until it ends...
    stolen = patient_client(url)
    stolen.session_hash = alice.session_hash
    rows = stolen.predict(*FILTERS, api_name="/list_labels")[0]["data"]
    assert [row[LIST_HEADERS.index("id")] for row in rows] == [1]
    link, folder = export(alice)

    alice.predict(api_name="/reviewer_sign_out")
    # ...and not a moment after: the page's session and the pending download are both dead.
    with pytest.raises(Exception, match="Sign in as a reviewer to browse labels"):
        stolen.predict(*FILTERS, api_name="/list_labels")
    refused = httpx.get(urljoin(url, link), timeout=HTTP_S)
    assert refused.status_code == 403 and "session that made this export has ended" in refused.text
    assert SECRET not in refused.text and gone(folder)

    # The token itself is refused, not only forgotten by the page.
    token = gate.sign_in("alice", "secret", address="192.0.2.1")
    assert gate.who("read labels", session=token) == "alice"
    gate.sign_out(token)
    with pytest.raises(NotAReviewer, match=EXPIRED):
        gate.who("read labels", session=token)


def test_failed_sign_ins_are_limited_per_reviewer_name(served):
    url, _ = served
    client = patient_client(url)
    for _ in range(3):
        with pytest.raises(Exception, match="Wrong reviewer name or password"):
            client.predict("bob", "guess", api_name="/reviewer_sign_in")
    # Even the right password is refused now, with the limit and when to retry.
    with pytest.raises(Exception, match=r"Too many failed sign-ins for this reviewer name: the "
                                        r"limit is 3 in 15 minutes\. Try again in 15 minutes"):
        client.predict("bob", "other", api_name="/reviewer_sign_in")
    # Another reviewer from the same address is not locked out by bob's attacker.
    signed_in(url, "alice", "secret")


def test_failed_sign_ins_are_limited_per_address(guards, harmful, tmp_path):
    limits = Limits(account_failures=3, address_failures=4)
    with serving(guards, tmp_path, harmful, limits) as (url, _):
        client = patient_client(url)
        for name in ("carol", "dave", "erin", "frank"):  # one guess each: no name reaches 3
            with pytest.raises(Exception, match="Wrong reviewer name or password"):
                client.predict(name, "guess", api_name="/reviewer_sign_in")
        with pytest.raises(Exception, match=r"Too many failed sign-ins from your address: the "
                                            r"limit is 4 in 15 minutes\. Try again in"):
            client.predict("alice", "secret", api_name="/reviewer_sign_in")


def test_sessions_and_links_expire(guards, harmful, tmp_path):
    # The session's clock is the gate's, moved by the test: a slow call on a loaded machine cannot
    # end the session before the test looks. The link expires in real time: its own timer
    # deletes the export after export_ttl, and the test waits for that, not for a fixed time.
    clock = Clock()
    limits = Limits(session_ttl=3, export_ttl=1)
    with serving(guards, tmp_path, harmful, limits, clock=clock) as (url, _):
        alice = signed_in(url)
        link, folder = export(alice)
        assert alice.predict(*FILTERS, api_name="/list_labels")[0]["data"]
        assert gone(folder)  # the link's timer ran out
        expired = httpx.get(urljoin(url, link), timeout=HTTP_S)
        assert expired.status_code == 404 and "expired" in expired.text
        assert SECRET not in expired.text
        clock.now += 3.3
        with pytest.raises(Exception, match=EXPIRED):
            alice.predict(*FILTERS, api_name="/list_labels")
        alice.predict("alice", "secret", api_name="/reviewer_sign_in")
        assert alice.predict(*FILTERS, api_name="/list_labels")[0]["data"]


def test_error_messages_show_visitor_text_as_text(served):
    url, _ = served
    alice = signed_in(url)
    hostile = ("", "any", "", "any", "", "", "<img src=x onerror=alert(1)>", "", "", 1)
    with pytest.raises(Exception, match="ISO date") as refused:
        alice.predict(*hostile, api_name="/list_labels")
    assert "<img" not in str(refused.value) and "&lt;img src=x" in str(refused.value)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limits_slide_with_time_and_a_success_clears_the_name():
    clock = Clock()
    gate = ReviewerGate(Mode.ACCOUNTS, ACCOUNTS,
                        Limits(account_failures=2, address_failures=3, failure_window=60,
                               session_ttl=10), clock=clock)
    for _ in range(2):
        with pytest.raises(NotAReviewer, match="Wrong"):
            gate.sign_in("alice", "nope", address="a")
    with pytest.raises(TooManySignIns, match="limit is 2 in 1 minute. Try again in 1 minute"):
        gate.sign_in("alice", "secret", address="a")
    clock.now += 45
    with pytest.raises(TooManySignIns, match="Try again in 15 seconds"):
        gate.sign_in("alice", "secret", address="a")
    clock.now += 15
    token = gate.sign_in("alice", "secret", address="a")  # the window slid past both failures
    with pytest.raises(NotAReviewer, match="Wrong"):
        gate.sign_in("alice", "nope", address="a")
    gate.sign_in("alice", "secret", address="a")  # one failure since the success: under 2
    assert gate.who("read", session=token) == "alice"
    clock.now += 10
    with pytest.raises(NotAReviewer, match=EXPIRED):
        gate.who("read", session=token)
    for bad in ("", "x" * 43, None):
        with pytest.raises(NotAReviewer):
            gate.who("read", session=bad)


def test_download_links_are_refused_once_claimed_or_expired():
    clock = Clock()
    downloads = Downloads(300, clock=clock)
    issued = []
    for i in range(2):
        folder = Path(tempfile.mkdtemp(prefix="guard-lab-export-"))
        (folder / f"export{i}.jsonl").write_text("{}\n")
        link = downloads.issue(folder / f"export{i}.jsonl", "alice")
        issued.append((link.url.rsplit("/", 1)[1], folder))
    (first, first_folder), (second, second_folder) = issued
    assert downloads.claim(first).path.name == "export0.jsonl"
    with pytest.raises(LinkRefused, match="already used") as used:
        downloads.claim(first)
    clock.now += 301
    with pytest.raises(LinkRefused, match="expired") as expired:
        downloads.claim(second)
    assert (used.value.status, expired.value.status) == (404, 404)
    assert not second_folder.exists() and downloads.pending() == 0
    downloads.remove_folder(first_folder)  # what the route does once the file is sent
    assert not first_folder.exists()


def test_limits_come_from_the_environment():
    environ = {"GUARD_LAB_SESSION_TTL": "60", "GUARD_LAB_EXPORT_TTL": "30",
               "GUARD_LAB_SIGN_IN_FAILURES": "4", "GUARD_LAB_SIGN_IN_FAILURES_PER_ADDRESS": "9",
               "GUARD_LAB_SIGN_IN_WINDOW": "120"}
    gate = ReviewerGate.from_config(ACCOUNTS, on_space=False, environ=environ)
    assert gate.limits == Limits(session_ttl=60, export_ttl=30, account_failures=4,
                                 address_failures=9, failure_window=120)
    assert ReviewerGate.from_config(ACCOUNTS, on_space=False, environ={}).limits == Limits(
        session_ttl=8 * 3600, export_ttl=300, account_failures=5, address_failures=20,
        failure_window=900)
    with pytest.raises(ValueError, match="GUARD_LAB_EXPORT_TTL must be a positive number"):
        ReviewerGate.from_config(ACCOUNTS, on_space=False, environ={"GUARD_LAB_EXPORT_TTL": "-1"})
