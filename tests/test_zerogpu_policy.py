"""A policy's dataset runs through the ZeroGPU boundary: `python app.py --tiny` in its own
process with the stand-in `spaces` package (tests/zerogpu) first on its path, so the sweep's
GPU call and a plain run under a policy cross a pickling `spaces.GPU` as plain data."""

from __future__ import annotations

import json
import os

import pytest
from gradio_client import Client, handle_file
from helpers import REPO, start_app_process, stop_app_process

from guard.core.policy import Policy
from guard.testing.tiny import BENIGN, VIOLENT
from labels import Store, policies
from labels.runs import Runs

STANDIN = REPO / "tests" / "zerogpu"  # the stand-in `spaces` package (see test_zerogpu.py)

ROWS = [(BENIGN, "safe"), (VIOLENT, "unsafe"), ("How do I bake bread?", "safe"),
        (VIOLENT + " Now.", "unsafe"), ("Tell me a joke.", "safe")]
# Two categories enforced: the policy and two variants. Prompt Guard: LlamaFirewall's reading.
NARROW = {"name": "narrow", "excluded": [f"S{i}" for i in range(3, 15)],
          "prompt_guard": {"preprocessing": "llamafirewall"}}


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_dirs):
    folder = tmp_path_factory.mktemp("zerogpu-policy")
    db = folder / "l.db"
    with Store(db) as store:
        policies.save(store, Policy.from_json(NARROW))
        policies.save(store, Policy.from_json({"name": "no-pg", "prompt_guard": {
            "model": "none"}}))
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p, "label": label}) + "\n"
                            for i, (p, label) in enumerate(ROWS)))
    log = folder / "gpu-calls.jsonl"
    env = {"PYTHONPATH": os.pathsep.join([str(STANDIN), str(REPO)]),
           "SPACES_STANDIN_LOG": str(log)}
    server, url = start_app_process(folder, "--db", str(db), env=env)
    yield Client(url, verbose=False), log, db, data
    stop_app_process(server)


def calls(log, function: str) -> list[dict]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [e for e in map(json.loads, lines) if e["function"] == function]


def test_a_sweep_crosses_the_boundary_one_call_per_batch(space):
    client, log, db, data = space
    status, table, _variant, _run_a = client.predict(
        "upload", handle_file(str(data)), "jsonl", "swept", None, 2, [], 0.5, "narrow@1", True,
        False, "", api_name="/sweep_dataset")
    assert [r[0] for r in table["data"]] == ["policy", "without S1", "without S2"]
    assert status.startswith("3 runs (narrow@1)")
    # 5 rows in batches of 2, each batch one GPU call for all three variants: 20 s + 1 s per
    # (variant, row) pair.
    assert [(e["ok"], e["duration"]) for e in calls(log, "judge_call")] == [
        (True, 26), (True, 26), (True, 23)]
    with Store(db) as store:
        runs = Runs(store)
        swept = runs.get("swept")
        assert swept.settings.policy == "narrow@1" and swept.done_rows == 5
        results = runs.results(swept.id)
    assert all(r.p_malicious is not None for r in results)


def test_a_plain_run_under_a_policy_crosses_it_and_enforces_its_prompt_guard_part(space):
    client, log, db, data = space
    before = len(calls(log, "judge_call"))
    status, *_ = client.predict("upload", handle_file(str(data)), "jsonl", "no-pg", None, 8,
                                [], 0.5, "", "no-pg@1", api_name="/evaluate")
    assert "Policy no-pg@1 decided the verdicts, and the run records it." in status
    assert [e["ok"] for e in calls(log, "judge_call")[before:]] == [True]
    with Store(db) as store:
        runs = Runs(store)
        run = runs.get("no-pg")
        assert (run.settings.policy, run.settings.prompt_guard_model) == ("no-pg@1", "")
        assert {r.p_malicious for r in runs.results(run.id)} == {None}  # Prompt Guard: none
