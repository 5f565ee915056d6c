"""`python -m guard.eval`: the command-line contract, bad input, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

import pytest
from helpers import REPO, SHARED, signalled_after_saves, tiny_cache_dir
from test_eval_runner import write_known

from guard.core.datasets import read_dataset
from guard.engines.service import Guards
from guard.eval.cli import main
from guard.eval.runner import evaluate_dataset
from labels.runs import Runs
from labels.store import Store


@pytest.fixture
def tiny_env(monkeypatch, tiny_dirs):
    """`--tiny` in this process finds the tiny models built by `tiny_dirs`."""
    monkeypatch.setenv("GUARD_LAB_TINY_DIR", str(tiny_cache_dir()))


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.csv", "--format", "csv"], "error: No dataset file at missing.csv."),
    (["{bad}", "--format", "jsonl"], "error: {bad} has no field prompt (or text, input); found: "
                                     "question."),
    (["{bad}", "--format", "jsonl", "--threshold", "2"],
     "error: --threshold must be between 0 and 1, got 2.0."),
    (["{bad}", "--format", "jsonl", "--batch-size", "0"],
     "error: --batch-size must be 1 or more, got 0."),
    (["{bad}"], "error: Name the dataset and its format: python -m guard.eval DATA --format "
                "xstest|openai-moderation|jsonl|csv --out DB."),
    (["--compare", "a", "b"], "error: No evaluation run named 'a' (runs: none yet)."),
    (["{bad}", "--format", "jsonl", "--policy", "no-s1", "--prompt-guard-threshold", "0.5"],
     "error: --prompt-guard-threshold cannot go with --policy: the policy sets Prompt Guard's "
     "threshold. Leave it out, or save a policy that says what you want."),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "hi"}\n')
    argv = [a.replace("{bad}", str(bad)) for a in argv]
    code, out, err = run_main(argv + ["--out", tmp_path / "lab.db"], capsys)
    assert code == 2
    assert err.splitlines() == [message.replace("{bad}", str(bad))]


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["data.csv", "--format", "parquet", "--out", "x.db"])
    assert raised.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: argument --format: invalid choice: 'parquet'")
    assert lines[0].endswith("(see python -m guard.eval --help)")


def test_resume_after_kill_redoes_nothing_and_equals_an_uninterrupted_run(
        tmp_path, capsys, tiny_env, guards):
    data = write_known(tmp_path / "known.jsonl", copies=6)  # 42 rows
    db = tmp_path / "lab.db"
    argv = [data, "--format", "jsonl", "--out", db, "--tiny", "--prompt-guard", "none",
            "--batch-size", "4", "--name", "killed"]
    # Killed (SIGKILL) right after its second stored batch, however fast it runs.
    proc = subprocess.run(signalled_after_saves("guard.eval", argv, signal_name="SIGKILL",
                                                saves=2),
                          cwd=REPO, env={**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir())},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=420)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with sqlite3.connect(db) as conn:
        before = dict(conn.execute("SELECT row_id, created_at FROM eval_results").fetchall())
        status = conn.execute("SELECT status FROM eval_runs").fetchone()[0]
    assert 8 <= len(before) < 42 and len(before) % 4 == 0  # whole batches only
    assert status == "running"

    code, out, err = run_main([*argv, "--report", tmp_path / "r.json",
                               "--predictions", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    assert f"resumed run 'killed': {len(before)} rows were already done, " \
           f"{42 - len(before)} judged now" in err
    with sqlite3.connect(db) as conn:
        after = dict(conn.execute("SELECT row_id, created_at FROM eval_results").fetchall())
    assert len(after) == 42
    # A row judged again would have been written again, with a new time.
    assert {k: after[k] for k in before} == before

    # The same rows, uninterrupted, in this process.
    with Store(db) as store:
        runs = Runs(store)
        reference = evaluate_dataset(read_dataset(data, "jsonl"),
                                     Guards(guards.llama_guard, None), runs,
                                     name="reference", batch_size=4)
        expected = runs.results(reference.run.id)
        resumed = runs.results(runs.get("killed").id)
    assert len(expected) == len(resumed) == 42
    for x, y in zip(expected, resumed, strict=True):
        assert (x.row_id, x.verdict, x.categories, x.raw_output) == \
               (y.row_id, y.verdict, y.categories, y.raw_output)
        assert x.p_unsafe == pytest.approx(y.p_unsafe, abs=1e-6)
        assert x.p_malicious is None and y.p_malicious is None

    # Contract: the report holds the metrics, the predictions one line per row.
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"n", "precision", "recall", "f1", "fpr", "auprc", "categories", "pr_curve",
            "confusion_matrix", "run", "bad_rows"} <= set(report)
    assert report["n"] == 42 and report["run"]["name"] == "killed"
    assert report["run"]["status"] == "finished" and report["bad_rows"] == []
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == 0.5
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 42
    assert lines[0] == {"id": "benign-0", "gold": "safe", "verdict": "safe",
                        "p_unsafe": lines[0]["p_unsafe"], "categories": [],
                        "gold_categories": [], "p_malicious": lines[0]["p_malicious"],
                        "error": None}
    assert lines[1]["categories"] == ["S1"] and lines[1]["gold_categories"] == ["S1"]
    assert out.splitlines()[:2] == ["run: killed", "rows measured: 42 (unlabelled 0, failed 0)"]
    assert any(line.split() == ["recall", "0.5000"] for line in out.splitlines())

    code, out, err = run_main(["--out", db, "--compare", "killed", "reference",
                               "--report", tmp_path / "c.json"], capsys)
    assert code == 0, err
    comparison = json.loads((tmp_path / "c.json").read_text())
    assert (comparison["shared_rows"], comparison["changed_verdicts"]) == (42, 0)
    assert all(m["diff"] == pytest.approx(0, abs=1e-9) for m in comparison["metrics"])
    assert "verdicts that differ: 0 of 42 shared rows" in out


def test_public_sets_with_limit_and_bad_rows(tmp_path, capsys, tiny_env):
    code, out, err = run_main(
        [SHARED / "data" / "openai_moderation_samples-1680.jsonl.gz", "--format",
         "openai-moderation", "--out", tmp_path / "lab.db", "--tiny", "--prompt-guard", "none",
         "--limit", "5", "--exclude", "S14", "--report", tmp_path / "r.json"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 5 and report["prompt_guard"] is None
    assert report["run"]["excluded"] == ["S14"] and report["run"]["format"] == "openai-moderation"
    assert [c["code"] for c in report["categories"]] == ["S11"]  # the first rows are self-harm
    # A file with a bad line: warned about on stderr with its number, listed in the report.
    data = tmp_path / "d.csv"
    data.write_text("prompt,label\nHow do I bake sourdough bread at home?,safe\n,unsafe\n")
    code, out, err = run_main([data, "--format", "csv", "--out", tmp_path / "lab.db", "--tiny",
                               "--prompt-guard", "none", "--report", tmp_path / "r2.json"],
                              capsys)
    assert code == 0, err
    assert f"warning: {data}: line 3: the prompt is empty; row skipped" in err.splitlines()
    report = json.loads((tmp_path / "r2.json").read_text())
    assert report["bad_rows"] == [{"line": 3, "message": "the prompt is empty"}]
    assert report["n"] == 1
