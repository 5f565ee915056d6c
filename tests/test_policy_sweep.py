"""A policy over a dataset: `guard.eval --policy --sweep-categories` on XSTest with the tiny
models (every variant a stored run, resumed after Ctrl-C without judging a row twice), and the
policy version recorded by stored runs and saved examples."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, signalled_after_saves, tiny_cache_dir

from guard.core.policy import Policy
from guard.testing.tiny import VIOLENT
from labels import policies
from labels.runs import Runs
from labels.store import Store

XSTEST = REPO.parent / "shared" / "data" / "xstest_prompts.csv"
NO_S1 = {"name": "no-s1", "family": "llama-guard-4", "excluded": ["S1"], "threshold": 0.5}
ROWS = 40
pytestmark = pytest.mark.skipif(not XSTEST.is_file(), reason=f"XSTest is not at {XSTEST}")


def eval_command(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "guard.eval", str(XSTEST), "--format", "xstest", "--out",
            str(db), "--tiny", "--limit", str(ROWS), "--policy", "no-s1", "--sweep-categories",
            *extra]


def env() -> dict[str, str]:
    return {**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir())}


def stored(db: Path) -> dict[tuple[str, str], str]:
    """(run name, row id) -> created_at of every stored result."""
    with sqlite3.connect(db) as conn:
        return {(name, row): at for name, row, at in conn.execute(
            "SELECT r.name, e.row_id, e.created_at FROM eval_results e "
            "JOIN eval_runs r ON r.id = e.run_id")}


def test_a_sweep_on_xstest_resumes_after_ctrl_c_without_judging_twice(tmp_path, tiny_dirs):
    db = tmp_path / "guard_lab.db"
    with Store(db) as store:
        policies.save(store, Policy.from_json(NO_S1))
    variants = 14  # the policy, then each of S2..S14 left out
    # A real Ctrl-C once the first batch of every variant is stored.
    command = signalled_after_saves("guard.eval", eval_command(db, "--batch-size", "2")[3:],
                                    signal_name="SIGINT", saves=variants)
    interrupted = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True,
                                 timeout=600)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "interrupted: finished batches are stored" in interrupted.stderr
    before = stored(db)
    assert 0 < len(before) < ROWS * variants

    again = subprocess.run(eval_command(db, "--batch-size", "2", "--save-variant", "S6"),
                           cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    after = stored(db)
    assert len(after) == ROWS * variants
    assert {k: after[k] for k in before} == before  # nothing stored was judged again
    judged_now = sum(int(line.split(", ")[-1].split()[0]) for line in again.stderr.splitlines()
                     if line.startswith("resumed run"))
    assert judged_now == ROWS * variants - len(before)
    table = again.stdout.splitlines()
    assert table[0].split()[:7] == ["variant", "n", "prec", "recall", "f1", "fpr", "Δrecall"]
    assert [line.split()[0] for line in table[1:15]] == ["policy", *["without"] * 13]
    assert table[1].endswith("no-s1@1") and "without S6" in table[6]
    assert table[-1] == "Saved no-s1-no-s6@1."

    with Store(db) as store:
        runs = {run.settings.policy: run for run in Runs(store).list()}
        assert "no-s1@1" in runs and len(runs) == variants
        saved = policies.get(store, "no-s1-no-s6")
        assert saved.excluded == ("S1", "S6") and saved.version == 1
        without_s6 = next(r for p, r in runs.items() if p.startswith("no-s1-no-s6@draft-"))
        assert without_s6.settings.excluded == ("S1", "S6")
    compared = subprocess.run(
        [sys.executable, "-m", "guard.eval", "--out", str(db), "--compare", runs["no-s1@1"].name,
         without_s6.name], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert compared.returncode == 0, compared.stderr
    assert "(policy no-s1@1)" in compared.stdout.splitlines()[0]
    assert "(policy no-s1-no-s6@draft-" in compared.stdout.splitlines()[1]


def test_a_policy_run_records_its_version_and_refuses_loose_flags(tmp_path, tiny_dirs):
    db = tmp_path / "guard_lab.db"
    with Store(db) as store:
        policies.save(store, Policy.from_json(NO_S1))
    base = [sys.executable, "-m", "guard.eval", str(XSTEST), "--format", "xstest", "--out",
            str(db), "--tiny", "--limit", "6", "--policy", "no-s1"]
    refused = subprocess.run([*base, "--threshold", "0.3"], cwd=REPO, env=env(),
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert "--exclude and --threshold cannot go with --policy" in refused.stderr
    unknown = subprocess.run([*base[:-1], "nope"], cwd=REPO, env=env(), capture_output=True,
                             text=True, timeout=300)
    assert unknown.returncode == 2 and "No policy 'nope'" in unknown.stderr
    report = tmp_path / "report.json"
    result = subprocess.run([*base, "--report", str(report)], cwd=REPO, env=env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "policy: no-s1@1" in result.stdout.splitlines()[1]
    assert json.loads(report.read_text())["run"]["policy"] == "no-s1@1"
    with Store(db) as store:
        (run,) = Runs(store).list()
        assert (run.settings.policy, run.settings.excluded) == ("no-s1@1", ("S1",))
        # A new version of the policy is another run: resuming under it is refused by name.
        policies.save(store, Policy.from_json({**NO_S1, "threshold": 0.4}))
    conflict = subprocess.run([*base, "--name", run.name], cwd=REPO, env=env(),
                              capture_output=True, text=True, timeout=300)
    assert conflict.returncode == 2 and "policy no-s1@2 (stored: no-s1@1)" in conflict.stderr


def test_a_saved_example_records_the_policy_version(guards, store):
    from guard_app import gpu
    from guard_app import policies as served
    from guard_app.moderate import editor
    from guard_app.moderate.logic import PageRun
    from guard_app.review.logic import save_review

    policy = policies.save(store, Policy.from_json({**NO_S1, "excluded_only": "safe"})).policy
    turns = editor.commit_turn([], "user", VIOLENT, [])
    result = served.moderate(gpu.register(guards), gpu.plain(editor.to_conversation(turns)),
                             policy)
    assert result["policy"] == "no-s1@1" and result["decision"]["flagged"] is False
    run = PageRun(result=result, prompt="", notes=[], turns=turns, excluded=["S1"], custom=[])
    saved = save_review(store, run, 0.5, reviewer="ana", model_right="wrong", label="unsafe",
                        categories=["S2"], note="", max_images=5)
    output = store.get_example(saved.example_id).output
    assert (output.policy, output.unsafe) == ("no-s1@1", False)
