"""Stored runs (labels.runs) and the reports built from them, without a model."""

from __future__ import annotations

import math
import random
import re

import pytest
from sklearn import metrics as skm

from guard.eval.report import build_report, compare, format_comparison, format_report
from labels.errors import NotFound
from labels.runs import EvalResult, RunConflict, Runs, RunSettings
from labels.store import Store


def settings(name="run", **changes) -> RunSettings:
    base = {"name": name, "dataset": "d.jsonl", "dataset_sha256": "a" * 64, "format": "jsonl",
            "model": "lg", "prompt_guard_model": "pg", "excluded": ("S1",), "threshold": 0.5}
    return RunSettings(**{**base, **changes})


def result(row_id, gold, p, categories=(), gold_categories=(), p_malicious=None, error=None,
           position=0, threshold=0.5) -> EvalResult:
    verdict = None if error else ("unsafe" if p >= threshold else "safe")
    return EvalResult(row_id, position, gold, tuple(gold_categories), verdict,
                      None if error else p, tuple(categories), "", p_malicious, error)


@pytest.fixture
def runs(tmp_path):
    with Store(tmp_path / "lab.db") as store:
        yield Runs(store)


def test_start_resume_and_conflict(runs):
    run, resumed = runs.start(settings(), 3)
    assert not resumed and run.status == "running" and run.done_rows == 0
    runs.save_results(run.id, [result("a", True, 0.9, position=0), result("b", False, 0.1, position=1)])
    again, resumed = runs.start(settings(excluded=("s1",), dataset="moved/d.jsonl"), 3)
    assert resumed and again.id == run.id and again.done_rows == 2
    assert runs.done_row_ids(run.id) == {"a", "b"}
    with pytest.raises(RunConflict) as e:
        runs.start(settings(threshold=0.7, excluded=("S2",)), 3)
    assert str(e.value) == (
        "Run 'run' exists with other settings: excluded S2 (stored: S1); threshold 0.7 "
        "(stored: 0.5). Give this run another name, or repeat the stored settings to resume.")
    with pytest.raises(RunConflict, match="dataset content bbbbbbbbbbbb"):
        runs.start(settings(dataset_sha256="b" * 64), 3)
    finished = runs.finish(run.id)
    assert finished.status == "finished" and finished.finished_at is not None
    assert [r.name for r in runs.list()] == ["run"]


def test_results_round_trip_in_dataset_order(runs):
    run, _ = runs.start(settings(), 3)
    rows = [result("z", None, 0.8, categories=("S1", "S9"), gold_categories=(), p_malicious=0.25,
                   position=1),
            result("y", True, 0.0, error="too long", position=2),
            result("x", False, 0.2, gold_categories=("S2",), position=0)]
    runs.save_results(run.id, rows)
    back = runs.results(run.id)
    assert [r.row_id for r in back] == ["x", "z", "y"]
    assert back[1] == EvalResult("z", 1, None, (), "unsafe", 0.8, ("S1", "S9"), "", 0.25, None,
                                 created_at=back[1].created_at)
    assert back[2].error == "too long" and back[2].verdict is None and back[2].p_unsafe is None


def test_unknown_run_and_delete(runs):
    with pytest.raises(NotFound, match="No evaluation run named 'nope' \\(runs: none yet\\)"):
        runs.get("nope")
    run, _ = runs.start(settings(), 1)
    runs.save_results(run.id, [result("a", True, 0.9)])
    runs.delete("run")
    assert runs.list() == []
    run, resumed = runs.start(settings(threshold=0.9), 1)
    assert not resumed and run.done_rows == 0


def random_results(n=300, seed=3):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        gold = rng.random() < 0.4
        p = min(1.0, max(0.0, rng.gauss(0.65 if gold else 0.35, 0.25)))
        p = round(p, 2)  # ties, as real scores have
        gold_cats = rng.sample(["S1", "S2", "S10"], rng.randint(1, 2)) if gold else []
        pred = rng.sample(["S1", "S2", "S9"], 1) if p >= 0.5 else []
        out.append(result(str(i), gold, p, pred, gold_cats, p_malicious=rng.random(),
                          position=i))
    out.append(result("unlabelled", None, 0.9, position=n))
    out.append(result("failed", True, 0.0, error="boom", position=n + 1))
    return out


def test_metric_table_matches_scikit_learn(runs):
    run, _ = runs.start(settings(), 302)
    stored = random_results()
    runs.save_results(run.id, stored)
    report = build_report(runs.get("run"), runs.results(run.id))
    measured = [r for r in stored if r.gold is not None and r.error is None]
    y = [r.gold for r in measured]
    pred = [r.verdict == "unsafe" for r in measured]
    scores = [r.p_unsafe for r in measured]
    data = report.to_json()
    assert (report.labelled, report.unlabelled, report.failed) == (300, 1, 1)
    assert data["n"] == 300
    assert data["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert data["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert data["f1"] == pytest.approx(skm.f1_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert data["fpr"] == pytest.approx(fp / (fp + tn))
    assert data["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert data["auprc"] == pytest.approx(skm.average_precision_score(y, scores))
    precision, recall, thresholds = skm.precision_recall_curve(y, scores)
    curve = [(p["threshold"], p["precision"], p["recall"]) for p in data["pr_curve"]]
    assert len(curve) <= 200
    sk_points = {round(t, 9): (p, r) for t, p, r in zip(thresholds, precision, recall, strict=False)}
    for t, p, r in curve[:-1]:
        assert sk_points[round(t, 9)] == pytest.approx((p, r))
    assert curve[-1] == (1.0, 1.0, 0.0)
    # Per category: FNR over rows whose gold has the code, FPR over the others.
    by_code = {c["code"]: c for c in data["categories"]}
    assert list(by_code) == ["S1", "S2", "S10"]  # only the codes the gold labels use
    for code, row in by_code.items():
        has = [code in r.gold_categories for r in measured]
        said = [r.verdict == "unsafe" and code in r.categories for r in measured]
        tn, fp, fn, tp = skm.confusion_matrix(has, said, labels=[False, True]).ravel()
        assert row["positives"] == tp + fn and row["negatives"] == tn + fp
        assert row["fnr"] == pytest.approx(fn / (tp + fn))
        assert row["fpr"] == pytest.approx(fp / (fp + tn))
    pg_rows = [r for r in stored if r.gold is not None and r.p_malicious is not None]
    pg_scores, pg_gold = [r.p_malicious for r in pg_rows], [r.gold for r in pg_rows]
    assert data["prompt_guard"]["auprc"] == pytest.approx(
        skm.average_precision_score(pg_gold, pg_scores))
    assert data["prompt_guard"]["recall"] == pytest.approx(
        skm.recall_score(pg_gold, [s >= 0.9 for s in pg_scores]))
    text = format_report(report)
    assert re.search(rf"^precision +{data['precision']:.4f}$", text, re.M)
    assert re.search(r"^S10_fnr +\d\.\d{4}$", text, re.M)


def test_without_categories_or_labels(runs):
    run, _ = runs.start(settings(), 2)
    runs.save_results(run.id, [result("a", None, 0.9), result("b", None, 0.1, position=1)])
    report = build_report(runs.get("run"), runs.results(run.id))
    data = report.to_json()
    assert data["n"] == 0 and data["categories"] == [] and data["pr_curve"] == []
    assert data["auprc"] is None and data["prompt_guard"] is None
    assert report.unlabelled == 2


def test_compare_two_runs(runs):
    a, _ = runs.start(settings("a"), 4)
    b, _ = runs.start(settings("b", excluded=()), 4)
    gold = [True, True, False, False]
    runs.save_results(a.id, [result(str(i), g, p, position=i)
                             for i, (g, p) in enumerate(zip(gold, [0.9, 0.2, 0.1, 0.3], strict=True))])
    runs.save_results(b.id, [result(str(i), g, p, position=i)
                             for i, (g, p) in enumerate(zip(gold, [0.9, 0.8, 0.6, 0.3], strict=True))])
    report_a = build_report(runs.get("a"), runs.results(a.id))
    report_b = build_report(runs.get("b"), runs.results(b.id))
    comparison = compare(report_a, report_b)
    table = {r.metric: (r.a, r.b, r.diff) for r in comparison.rows}
    assert table["recall"] == (0.5, 1.0, 0.5)
    assert table["precision"] == (1.0, 2 / 3, pytest.approx(2 / 3 - 1))
    assert table["fpr"] == (0.0, 0.5, 0.5)
    assert table["n"] == (4, 4, 0)
    assert list(table)[:6] == ["n", "precision", "recall", "f1", "fpr", "auprc"]
    assert (comparison.shared_rows, comparison.changed_verdicts) == (4, 2)
    text = format_comparison(comparison)
    assert "recall" in text and "+0.5000" in text and "verdicts that differ: 2 of 4" in text
    assert comparison.to_json()["metrics"][2] == {"metric": "recall", "a": 0.5, "b": 1.0,
                                                  "diff": 0.5}
    assert not math.isnan(table["auprc"][0])
