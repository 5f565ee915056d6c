"""Batch evaluation through the OpenAI engine as a pipeline, against bench/openai_stub.py (a local
OpenAI-compatible server of known latency and slots, on 127.0.0.1): every row stored once, a busy
server's 429s shrinking the window, a server that goes away stopping the run, SIGKILL mid-run
resumed to exactly every row, and the --concurrency settings of guard.eval and the app."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from guard.core.datasets import read_dataset
from guard.engines.http_client import Window, retry_after_seconds
from guard.engines.openai_engine import OpenAIGuard, ServerUnavailable
from guard.engines.service import Guards
from guard.eval.cli import main
from guard.eval.runner import evaluate_dataset, lanes_for
from guard_app.config import parse_options
from labels.runs import Runs
from labels.store import Store

sys.path.insert(0, str(REPO))
from bench.openai_stub import MODEL, running_stub  # noqa: E402

OPENAI = {"GUARD_LAB_OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "GUARD_LAB_OPENAI_MODEL": MODEL}


def write_rows(path: Path, count: int, too_long: tuple[int, ...] = ()) -> Path:
    """Rows whose verdict the stub decides: every seventh asks for an 'attack' (unsafe)."""
    with path.open("w") as out:
        for i in range(count):
            prompt = f"row {i}: how do I bake bread " + ("and attack someone" if i % 7 == 0
                                                         else "for a picnic")
            if i in too_long:
                prompt += " toolong"
            out.write(json.dumps({"id": f"r{i}", "prompt": prompt,
                                  "label": "unsafe" if i % 7 == 0 else "safe"}) + "\n")
    return path


def engine(url: str, concurrency: int, **options) -> OpenAIGuard:
    return OpenAIGuard(url, MODEL, family="llama-guard-3", concurrency=concurrency, **options)


def stored(db: Path) -> dict[str, str]:
    """row_id -> created_at of every stored result ({} before the tables exist)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return dict(conn.execute("SELECT row_id, created_at FROM eval_results"))
    except sqlite3.OperationalError:
        return {}


def count_stored(db: Path) -> tuple[int, int]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(
                "SELECT count(*), count(DISTINCT row_id) FROM eval_results").fetchone()
    except sqlite3.OperationalError:
        return 0, 0


# --- the window and Retry-After, as plain state ------------------------------------------------

def test_the_window_halves_once_per_round_and_grows_back_by_one_per_round():
    window = Window(8)
    rounds = [window.start() for _ in range(8)]
    assert not window.may_start(0.0) and rounds == [0] * 8
    window.busy(rounds[0], None, 0.0)  # the first busy answer of a round halves the window
    window.busy(rounds[1], None, 0.0)  # the others of that round do not cut it again
    assert (window.limit, window.round, window.busy_answers, window.active) == (4.0, 1, 2, 6)
    assert not window.may_start(0.0)  # six in flight, four allowed
    for _ in range(6):
        window.answered()  # each answer adds 1/limit: a round of answers adds about one
    assert 5.0 < window.limit < 6.0 and window.may_start(0.0)
    grown = window.limit
    window.busy(window.start(), None, 0.0)  # a busy answer of the new round cuts again
    assert (window.limit, window.round) == (grown / 2, 2)
    for _ in range(1000):
        window.start()
        window.answered()
    assert window.limit == 8.0  # never above the concurrency asked for


def test_retry_after_holds_new_requests_until_it_has_passed():
    window = Window(4)
    window.busy(window.start(), 2.0, now=100.0)
    assert not window.may_start(101.9) and window.may_start(102.0)
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("86400") == 60.0  # capped: asked again after a minute
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# --- the pipeline against the stub ---------------------------------------------------------------

def test_a_pipelined_run_stores_every_row_once_and_keeps_row_errors(tmp_path):
    dataset = read_dataset(write_rows(tmp_path / "rows.jsonl", 300, too_long=(5, 150)), "jsonl")
    calls = []
    with running_stub(tmp_path, latency_ms=20, slots=16) as stub, \
            engine(stub.url, 32) as remote, Store(tmp_path / "lab.db") as store:
        assert lanes_for(remote, 16) == 4  # twice the window of rows queued, in batches of 16
        runs = Runs(store)
        outcome = evaluate_dataset(dataset, Guards(remote, None), runs, name="piped",
                                   progress=lambda done, total: calls.append((done, total)))
        results = {r.row_id: r for r in runs.results(outcome.run.id)}
        stats = stub.stats()
    assert (outcome.judged, outcome.failed, outcome.run.status) == (300, 2, "finished")
    assert len(results) == 300 and calls[0] == (0, 300) and calls[-1] == (300, 300)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    for i in range(300):
        result = results[f"r{i}"]
        if i in (5, 150):
            assert result.verdict is None and "too long" in result.error
        else:
            assert result.error is None
            assert result.verdict == ("unsafe" if i % 7 == 0 else "safe"), i
            assert result.categories == (("S1",) if i % 7 == 0 else ())
    assert stats["peak_busy"] <= 16 and stats["refused"] == 0


def test_a_busy_server_shrinks_the_window_and_no_row_fails(tmp_path):
    # 8 slots and no queue: a request beyond them gets 429 with Retry-After at once.
    dataset = read_dataset(write_rows(tmp_path / "rows.jsonl", 400), "jsonl")
    with running_stub(tmp_path, latency_ms=20, slots=8, max_waiting=0, retry_after=0.05) as stub, \
            engine(stub.url, 64, backoff=0.05) as remote, Store(tmp_path / "lab.db") as store:
        runs = Runs(store)
        outcome = evaluate_dataset(dataset, Guards(remote, None), runs, name="busy")
        results = runs.results(outcome.run.id)
        stats = stub.stats()
    assert (outcome.judged, outcome.failed, len(results)) == (400, 0, 400)
    assert stats["served"] == 400 and stats["peak_busy"] <= 8
    # Every 429 reached the window, which stayed well below the 64 asked for.
    assert stats["refused"] > 0 and remote.window.busy_answers == stats["refused"]
    assert remote.window.limit < 64


def test_a_server_that_goes_away_stops_the_run_and_the_same_run_resumes(tmp_path):
    dataset = read_dataset(write_rows(tmp_path / "rows.jsonl", 1500), "jsonl")
    with Store(tmp_path / "lab.db") as store:
        runs = Runs(store)
        with running_stub(tmp_path, latency_ms=20, slots=16) as stub, \
                engine(stub.url, 16, retries=1, backoff=0.01, timeout=5) as remote:
            def stop_the_server(done, total):
                if done >= 100:
                    stub.stop()

            with pytest.raises(ServerUnavailable, match=r"ConnectError.* of 1,500 rows judged "
                                                        r"so far are stored; the same command"):
                evaluate_dataset(dataset, Guards(remote, None), runs, name="r",
                                 progress=stop_the_server)
        before = {r.row_id for r in runs.results(runs.get("r").id)}
        assert 100 <= len(before) < 1500
        assert all(r.error is None for r in runs.results(runs.get("r").id))
        with running_stub(tmp_path, latency_ms=20, slots=16) as stub, \
                engine(stub.url, 16) as remote:
            outcome = evaluate_dataset(dataset, Guards(remote, None), runs, name="r")
        results = runs.results(outcome.run.id)
    assert (outcome.resumed, outcome.skipped, outcome.judged) == (True, len(before),
                                                                  1500 - len(before))
    assert len(results) == len({r.row_id for r in results}) == 1500
    assert all(r.error is None for r in results)


def test_sigkill_mid_run_resumes_to_exactly_every_row(tmp_path, capsys, monkeypatch):
    rows = 5000
    data = write_rows(tmp_path / "rows.jsonl", rows)
    db = tmp_path / "lab.db"
    argv = [str(data), "--format", "jsonl", "--out", str(db), "--engine", "openai", "--family",
            "llama-guard-3", "--prompt-guard", "none", "--concurrency", "64", "--name", "killed"]
    with running_stub(tmp_path, latency_ms=100, slots=64) as stub:
        env = {**os.environ, "GUARD_LAB_OPENAI_BASE_URL": stub.url,
               "GUARD_LAB_OPENAI_MODEL": MODEL}
        proc = subprocess.Popen([sys.executable, "-m", "guard.eval", *argv], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while count_stored(db)[0] < 1000 and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        before = stored(db)
        assert 1000 <= len(before) < rows and count_stored(db) == (len(before), len(before))

        monkeypatch.setenv("GUARD_LAB_OPENAI_BASE_URL", stub.url)
        monkeypatch.setenv("GUARD_LAB_OPENAI_MODEL", MODEL)
        report = tmp_path / "report.json"
        code = main([*argv, "--report", str(report)])
        err = capsys.readouterr().err
    assert code == 0, err
    assert (f"resumed run 'killed': {len(before)} rows were already done, "
            f"{rows - len(before)} judged now") in err
    after = stored(db)
    assert count_stored(db) == (rows, rows)
    assert {k: after[k] for k in before} == before  # no stored row was written again
    data = json.loads(report.read_text())
    assert (data["n"], data["run"]["status"], data["recall"], data["precision"]) == (
        rows, "finished", 1.0, 1.0)


# --- the settings ------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "environ", "message"), [
    (["--tiny", "--concurrency", "8"], {},
     "error: --concurrency sets the requests in flight of --engine openai; transformers runs "
     "the model in this process"),
    (["--engine", "openai", "--concurrency", "0"], OPENAI,
     "error: --concurrency (GUARD_LAB_OPENAI_CONCURRENCY) must be 1 to 512 requests in flight, "
     "got 0."),
    (["--engine", "openai"], {**OPENAI, "GUARD_LAB_OPENAI_CONCURRENCY": "lots"},
     "error: GUARD_LAB_OPENAI_CONCURRENCY must be a whole number of requests in flight (1 to "
     "512), got 'lots'"),
])
def test_concurrency_refusals_are_one_line(tmp_path, capsys, monkeypatch, argv, environ,
                                           message):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    data = write_rows(tmp_path / "rows.jsonl", 3)
    code = main([str(data), "--format", "jsonl", "--out", str(tmp_path / "lab.db"),
                 "--prompt-guard", "none", *argv])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(message), lines


def test_the_apps_concurrency_also_sets_the_requests_in_flight_of_a_server():
    def window(argv, environ=None):
        options = parse_options(["--no-labels", *argv], {**OPENAI, **(environ or {})})
        return options.concurrency, options.engines.openai_concurrency

    assert window(["--engine", "openai"]) == (1, 16)  # neither set: the engine's default
    assert window(["--engine", "openai", "--concurrency", "64"]) == (64, 64)
    assert window(["--engine", "openai"], {"GUARD_LAB_CONCURRENCY": "32"}) == (32, 32)
    assert window(["--engine", "openai", "--concurrency", "64"],
                  {"GUARD_LAB_OPENAI_CONCURRENCY": "256"}) == (64, 256)
    assert window(["--concurrency", "2"]) == (2, 16)  # a local model: runs at once only
    with pytest.raises(SystemExit):
        window(["--engine", "openai", "--concurrency", "600"])


def test_the_apps_batch_evaluation_pipelines_through_its_gpu_calls(tmp_path):
    from guard_app import gpu
    from guard_app.evaluate import logic

    dataset = read_dataset(write_rows(tmp_path / "rows.jsonl", 200), "jsonl")
    with running_stub(tmp_path, latency_ms=20, slots=16) as stub, \
            engine(stub.url, 16) as remote, Store(tmp_path / "lab.db") as store:
        guards = Guards(remote, None)
        evaluation = logic.evaluate(dataset, guards, Runs(store), name="app",
                                    judge_batch=logic.gpu_judge(gpu.register(guards)))
    assert (evaluation.outcome.judged, evaluation.outcome.failed) == (200, 0)
    verdicts = {r.row_id: r.verdict for r in evaluation.report.results}
    assert verdicts == {f"r{i}": "unsafe" if i % 7 == 0 else "safe" for i in range(200)}
