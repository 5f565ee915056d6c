"""A dataset with an attack column gives Prompt Guard's model-card figures, checked against
scikit-learn on the scores each run reports: through `python -m guard.eval` (its main, the tiny
models) and through the app's Batch evaluation (gradio_client, the `guards` fixture).

The data: the tiny Prompt Guard's known texts, two of them labelled against what it says (a
plain harmful request marked as an attack: a miss; a known jailbreak marked benign: a false
positive), and four texts of about 1,200 words that span three 512-token windows each, two of
them with a jailbreak hidden in one window.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from helpers import launch_app, tiny_cache_dir
from sklearn.metrics import (
    average_precision_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from guard.eval.cli import main
from guard.testing.tiny import (
    _ATTACK_EXTRA,
    _BENIGN_EXTRA,
    JAILBREAK,
    PROMPT_GUARD_EXAMPLES,
    filler,
)
from guard_app.moderate import logic as moderate
from labels.runs import Runs

LONG = ("long-benign-0", "long-benign-1", "long-late", "long-middle")
# How the rows spell their attack label: every documented spelling is used.
MALICIOUS = ["true", "1", "malicious", "jailbreak", "injection"]
BENIGN = ["false", "0", "benign"]


def attack_rows() -> list[dict[str, str]]:
    rows = []
    for n, (name, (text, label)) in enumerate(PROMPT_GUARD_EXAMPLES.items()):
        attack = bool(label)
        if name in ("harmful_but_plain", "developer_mode"):
            attack = not attack  # labelled against the model: one miss, one false positive
        rows.append({"id": name, "prompt": text,
                     "attack": MALICIOUS[n % 5] if attack else BENIGN[n % 3]})
    rows += [{"id": f"attack-{n}", "prompt": t, "attack": "malicious"}
             for n, t in enumerate(_ATTACK_EXTRA)]
    rows += [{"id": f"benign-{n}", "prompt": t, "attack": "benign"}
             for n, t in enumerate(_BENIGN_EXTRA)]
    rows += [{"id": f"long-benign-{n}", "prompt": filler(1200, seed=n), "attack": "0"}
             for n in range(2)]
    for name, where in (("long-late", -40), ("long-middle", 600)):
        words = filler(1200, seed=len(name)).split()
        words.insert(where if where > 0 else len(words) + where, JAILBREAK)
        rows.append({"id": name, "prompt": " ".join(words), "attack": "jailbreak"})
    rows.append({"id": "unsaid", "prompt": "Tell me a joke.", "attack": ""})  # no ground truth
    return rows


def expected_labels() -> dict[str, bool]:
    return {r["id"]: r["attack"] in MALICIOUS for r in attack_rows() if r["attack"]}


def check_level(level: dict, y: list[bool], s: list[float], threshold: float) -> None:
    """A level of the report's `prompt_guard_attack` against scikit-learn on (y, s)."""
    flagged = [x >= threshold for x in s]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    negatives = [f for f, t in zip(flagged, y, strict=True) if not t]
    assert (level["n"], level["malicious"], level["benign"]) == (len(y), sum(y), len(y) - sum(y))
    assert level["threshold"] == threshold
    assert level["precision"] == pytest.approx(precision_score(y, flagged, zero_division=0))
    assert level["recall"] == pytest.approx(recall_score(y, flagged, zero_division=0))
    assert level["fpr"] == pytest.approx(sum(negatives) / len(negatives))
    assert level["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert level["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert level["recall_at_1pct_fpr"] == pytest.approx(float(tpr[fpr <= 0.01].max()))
    for suggestion in level["suggested_thresholds"]:
        at = [x >= suggestion["threshold"] for x in s]
        assert suggestion["recall"] == pytest.approx(recall_score(y, at, zero_division=0))
        assert suggestion["precision"] == pytest.approx(precision_score(y, at, zero_division=0))
        assert suggestion["fpr"] <= suggestion["value"]


@pytest.fixture
def tiny_env(monkeypatch, tiny_dirs):
    monkeypatch.setenv("GUARD_LAB_TINY_DIR", str(tiny_cache_dir()))


def test_guard_eval_reports_prompt_guard_as_its_card_does(tmp_path, capsys, tiny_env):
    data = tmp_path / "attacks.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in attack_rows()))
    db, report_path, predictions = tmp_path / "lab.db", tmp_path / "r.json", tmp_path / "p.jsonl"
    argv = [data, "--format", "jsonl", "--out", db, "--tiny", "--name", "attacks",
            "--prompt-guard-threshold", "0.8", "--target-fpr", "0.01,0.1",
            "--report", report_path, "--predictions", predictions]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err

    lines = {line["id"]: line for line in map(json.loads, predictions.read_text().splitlines())}
    labels = expected_labels()
    assert {k: v["attack"] for k, v in lines.items()} == {**labels, "unsaid": None}
    assert lines["unsaid"]["window_scores"] is None
    scored = [lines[k] for k in labels]
    y = [line["attack"] for line in scored]
    s = [line["p_malicious"] for line in scored]
    pg = json.loads(report_path.read_text())["prompt_guard_attack"]
    assert pg["threshold"] == 0.8 and pg["model"].endswith("prompt-guard-2-tiny")
    check_level(pg["messages"], y, s, 0.8)
    assert [t["value"] for t in pg["messages"]["suggested_thresholds"]] == [0.01, 0.1]
    # The tiny model gets the two rows labelled against it wrong, and the rest right.
    m = pg["messages"]
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (sum(y) - 1, 1, 1, len(y) - sum(y) - 1)
    assert 0.5 < m["roc_auc"] < 1.0

    # Windows: the served score is the maximum of the message's windows; the long texts span
    # three windows each, and the window level takes each window with its message's label.
    for line in scored:
        assert max(line["window_scores"]) == pytest.approx(line["p_malicious"], abs=1e-5)
    spanning = sorted(k for k in labels if len(lines[k]["window_scores"]) > 1)
    assert spanning == sorted(LONG) and all(len(lines[k]["window_scores"]) == 3 for k in LONG)
    assert (pg["multi_window_messages"], pg["window_scores_known"]) == (4, len(labels))
    wy = [line["attack"] for line in scored for _ in line["window_scores"]]
    ws = [x for line in scored for x in line["window_scores"]]
    check_level(pg["windows"], wy, ws, 0.8)
    assert lines["long-late"]["window_scores"][-1] > 0.9  # the jailbreak's window fired
    assert max(lines["long-late"]["window_scores"][:-1]) < 0.1

    assert (y.count(True), y.count(False)) == (9, 14)
    assert "Prompt Guard on 9 malicious and 14 benign messages" in out
    assert "4 of 23 messages spanned several 512-token windows" in out
    assert any(line.split()[0] == "prompt_guard_attack_message_roc_auc"
               for line in out.splitlines())
    assert "warning: Prompt Guard: Only 9 malicious messages: too few to trust" in err

    # The stored run alone gives the message level again: its scores, and the attack labels
    # read again from the very file it judged (no model is loaded by --compare).
    code = main(["--out", str(db), "--compare", "attacks", "attacks",
                 "--report", str(tmp_path / "c.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    compared = {r["metric"]: r["a"]
                for r in json.loads((tmp_path / "c.json").read_text())["metrics"]}
    assert compared["prompt_guard_attack_message_roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert compared["prompt_guard_attack_message_n"] == len(y)


def test_a_bad_attack_value_names_its_row_and_the_accepted_values(tmp_path, capsys, tiny_env):
    data = tmp_path / "bad.csv"
    data.write_text("id,prompt,attack\nok,Hello there,benign\nodd,Hi,perhaps\n")
    code = main([str(data), "--format", "csv", "--out", str(tmp_path / "lab.db"), "--tiny",
                 "--prompt-guard-threshold", "1.5"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --prompt-guard-threshold must be between 0 and 1, got 1.5."]
    code = main([str(data), "--format", "csv", "--out", str(tmp_path / "lab.db"), "--tiny",
                 "--prompt-guard", "none"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert ("warning: " + str(data) + ": line 3: attack 'perhaps' is not one of "
            "true/1/malicious/jailbreak/injection (an attack) or false/0/benign (benign); leave "
            "it empty when the row does not say; row skipped") in err
    assert "the dataset has an attack column but Prompt Guard was not run" in err


def test_batch_evaluation_reports_prompt_guard_as_its_card_does(guards, tmp_path):
    from labels import Store

    data = tmp_path / "attacks.csv"
    with data.open("w", newline="") as f:
        out = csv.DictWriter(f, ["id", "prompt", "attack"])
        out.writeheader()
        out.writerows(attack_rows())
    store = Store(tmp_path / "labels.db")
    demo, url = launch_app(guards, tmp_path, store=store, data_dir=tmp_path / "no-data")
    try:
        client = Client(url, verbose=False)
        result = client.predict("upload", handle_file(str(data)), "csv", "attacks", None, 8,
                                list(moderate.CODES), 0.5, api_name="/evaluate")
        runs = Runs(store)
        stored = {r.row_id: r for r in runs.results(runs.get("attacks").id)}
        shown = client.predict("attacks", 0.5, "all", None, None, "", api_name="/run_rows")
    finally:
        demo.close()
        store.close()
    labels = expected_labels()
    pg = result[5]["prompt_guard_attack"]
    reported = {row["id"]: row for row in pg["rows"]}  # the scores behind the figures
    assert {k: row["attack"] for k, row in reported.items()} == labels
    assert {k: row["p_malicious"] for k, row in reported.items()} == {
        k: stored[k].p_malicious for k in labels}  # the run's stored, served scores
    y = [labels[k] for k in labels]
    s = [stored[k].p_malicious for k in labels]
    check_level(pg["messages"], y, s, 0.9)  # LlamaFirewall's threshold by default
    windows = {k: reported[k]["window_scores"] for k in labels}
    check_level(pg["windows"], [labels[k] for k in labels for _ in windows[k]],
                [x for k in labels for x in windows[k]], 0.9)
    # The window scores are the tiny model's for these texts (to float noise of batching).
    texts = {r["id"]: r["prompt"] for r in attack_rows()}
    for k, score in zip(labels, guards.prompt_guard.score_many([texts[k] for k in labels]),
                        strict=True):
        assert windows[k] == pytest.approx(list(score.window_scores), abs=1e-4)
        assert max(windows[k]) == pytest.approx(stored[k].p_malicious, abs=1e-4)
    assert sorted(k for k in labels if len(windows[k]) > 1) == sorted(LONG)
    assert pg["multi_window_messages"] == 4 and pg["rows_left_out"] == 0
    table = dict(result[1]["data"])
    assert table["prompt_guard_attack message roc_auc"] == f"{roc_auc_score(y, s):.4f}"
    assert table["prompt_guard_attack messages over several windows"] == f"4 of {len(y)}"
    assert "Prompt Guard on 9 malicious and 14 benign messages" in result[0]
    # The stored run, shown again: the same figures from the stored scores.
    again = shown[5]["prompt_guard_attack"]
    assert again["messages"] == pg["messages"] and again["windows"] == pg["windows"]
    assert Path(shown[5]["run"]["dataset"]).name == "attacks.csv"
