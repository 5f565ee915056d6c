"""Metrics against scikit-learn on the same inputs, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from labels.metrics import (
    CategoryRates,
    Confusion,
    ThresholdSuggestion,
    average_precision,
    category_rates,
    cohen_kappa,
    confusion,
    evaluate,
    f1,
    false_positive_rate,
    precision,
    precision_recall_curve,
    recall,
    threshold_for_fpr,
)
from labels.records import MetricInputs


def cases() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    out = []
    for n in (1, 2, 7, 50, 1000):
        y = rng.random(n) < 0.3
        scores = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        out.append((f"random{n}", y, scores, scores >= 0.5))
    y = rng.random(300) < 0.5
    out.append(("ties", y, np.round(rng.random(300), 1), rng.random(300) < 0.5))
    out.append(("no positives", np.zeros(20, bool), rng.random(20), rng.random(20) < 0.5))
    out.append(("all positives", np.ones(20, bool), rng.random(20), rng.random(20) < 0.5))
    out.append(("one score", rng.random(30) < 0.5, np.full(30, 0.5), np.ones(30, bool)))
    out.append(("never flagged", rng.random(30) < 0.5, rng.random(30), np.zeros(30, bool)))
    return out


CASES = cases()


@pytest.mark.parametrize("name, y, scores, pred", CASES, ids=[c[0] for c in CASES])
@pytest.mark.filterwarnings("ignore")
def test_matches_sklearn(name, y, scores, pred):
    c = confusion(y, pred)
    assert c.matrix == sk.confusion_matrix(y, pred, labels=[False, True]).tolist()
    assert precision(c) == pytest.approx(sk.precision_score(y, pred, zero_division=0))
    assert recall(c) == pytest.approx(sk.recall_score(y, pred, zero_division=0))
    assert f1(c) == pytest.approx(sk.f1_score(y, pred, zero_division=0))
    tn, fp = sk.confusion_matrix(y, pred, labels=[False, True])[0]
    assert false_positive_rate(c) == (fp / (fp + tn) if fp + tn else 0.0)
    ours, theirs = precision_recall_curve(y, scores), sk.precision_recall_curve(y, scores)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b)
    if y.any() or name == "no positives":
        assert average_precision(y, scores) == pytest.approx(sk.average_precision_score(y, scores))


@pytest.mark.filterwarnings("ignore")
def test_kappa_matches_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.random(40) < 0.4, rng.random(40) < 0.6
        assert cohen_kappa(a, b) == pytest.approx(sk.cohen_kappa_score(a, b))
    assert math.isnan(cohen_kappa([True, True], [True, True]))


def test_confusion_layout():
    assert confusion([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == Confusion(tp=2, fp=1, fn=1, tn=1)
    assert Confusion(2, 1, 1, 1).matrix == [[1, 1], [1, 2]]


def test_category_rates_as_in_the_model_card():
    gold = [frozenset({"S1"}), frozenset({"S1", "S2"}), frozenset(), frozenset({"S2"})]
    pred = [frozenset({"S1"}), frozenset({"S2"}), frozenset({"S1"}), frozenset()]
    rates = category_rates(gold, pred, ("S1", "S2", "S3"))
    assert rates[:2] == (CategoryRates("S1", 2, 2, 0.5, 0.5), CategoryRates("S2", 2, 2, 0.5, 0.0))
    assert (rates[2].positives, math.isnan(rates[2].false_negative_rate),
            rates[2].false_positive_rate) == (0, True, 0.0)


def test_threshold_for_target_fpr():
    y = [False, False, False, False, True, True, False, True]
    s = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    assert threshold_for_fpr(y, s, 0.0) == ThresholdSuggestion(0.0, 0.9, 0.0, 1 / 3, 1.0)
    assert threshold_for_fpr(y, s, 0.2) == ThresholdSuggestion(0.2, 0.5, 0.2, 1.0, 0.75)
    nothing = threshold_for_fpr([False, False], [0.8, 0.8], 0.0)
    assert nothing.threshold > 0.8 and (nothing.false_positive_rate, nothing.recall) == (0.0, 0.0)


def test_threshold_suggestion_checks_fpr_with_sklearn_curve():
    rng = np.random.default_rng(7)
    y = rng.random(500) < 0.3
    s = np.round(np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1), 2)
    for target in (0.01, 0.05, 0.2):
        got = threshold_for_fpr(y, s, target)
        fpr, tpr, thresholds = sk.roc_curve(y, s, drop_intermediate=False)
        best = max(tpr[i] for i in range(len(fpr)) if fpr[i] <= target)
        assert (got.recall, got.false_positive_rate <= target) == (pytest.approx(best), True)
        assert got.false_positive_rate == pytest.approx(np.mean(s[~y] >= got.threshold))


def test_evaluate_to_json():
    inputs = MetricInputs(
        y_true=(True, False, True, False), y_pred=(True, True, False, False),
        scores=(0.9, 0.6, 0.4, 0.1),
        gold_categories=(frozenset({"S1"}), frozenset(), frozenset({"S2"}), frozenset()),
        pred_categories=(frozenset({"S1"}), frozenset({"S2"}), frozenset(), frozenset()),
        codes=("S1", "S2"))
    data = evaluate(inputs, target_fpr=0.0).to_json()
    assert data == {
        "n": 4, "precision": 0.5, "recall": 0.5, "f1": 0.5, "fpr": 0.5,
        "auprc": pytest.approx(sk.average_precision_score([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1])),
        "confusion_matrix": {"labels": ["safe", "unsafe"], "matrix": [[1, 1], [1, 1]],
                             "tp": 1, "fp": 1, "fn": 1, "tn": 1},
        "categories": [{"code": "S1", "positives": 1, "negatives": 3, "fnr": 0.0, "fpr": 0.0},
                       {"code": "S2", "positives": 1, "negatives": 3, "fnr": 1.0,
                        "fpr": 1 / 3}],
        "suggested_threshold": {"target_fpr": 0.0, "threshold": 0.9, "fpr": 0.0, "recall": 0.5,
                                "precision": 1.0},
    }


def test_evaluate_with_no_labels():
    report = evaluate(MetricInputs((), (), (), (), (), ("S1",)))
    assert (report.n, report.precision, report.to_json()["auprc"], report.suggested) == (
        0, 0.0, None, None)
