import math

import pytest

from guard.core.categories import categories_for
from guard.core.verdict import (
    CategoryHit,
    ParsedAnswer,
    make_verdict,
    p_unsafe_from_logits,
    parse_answer,
)

TABLE = categories_for("llama-guard-4")


@pytest.mark.parametrize("text, expected", [
    ("\n\nsafe", ParsedAnswer("safe")),
    ("safe", ParsedAnswer("safe")),
    ("\n\nunsafe\nS1", ParsedAnswer("unsafe", ("S1",))),
    ("unsafe\nS1,S10", ParsedAnswer("unsafe", ("S1", "S10"))),
    ("  unsafe  \n  s2 , S3 \n", ParsedAnswer("unsafe", ("S2", "S3"))),
    ("unsafe", ParsedAnswer("unsafe")),
    ("unsafe\nS1,S1", ParsedAnswer("unsafe", ("S1",))),
    ("unsafe\nS99", ParsedAnswer("unsafe", ("S99",))),
    ("", ParsedAnswer("")),
    ("I cannot say", ParsedAnswer("")),
])
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_p_unsafe_is_softmax_over_the_two_logits():
    assert p_unsafe_from_logits(0.0, 0.0) == 0.5
    assert p_unsafe_from_logits(1.0, 3.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert p_unsafe_from_logits(1000.0, -1000.0) == 0.0  # no overflow


def test_verdict_reports_unknown_and_excluded_codes():
    enabled = [c for c in TABLE if c.code != "S2"]
    verdict = make_verdict("\n\nunsafe\nS1,S2,S42", 0.9, enabled, TABLE)
    assert verdict.unsafe and verdict.verdict == "unsafe"
    assert verdict.categories == (CategoryHit("S1", "Violent Crimes"),)
    assert verdict.excluded_codes == ("S2",)
    assert verdict.unknown_codes == ("S42",)


def test_threshold_decides_not_the_text():
    low = make_verdict("\n\nsafe", 0.3, TABLE, TABLE, threshold=0.25)
    assert low.unsafe and low.model_label == "safe" and low.categories == ()
    assert not make_verdict("\n\nunsafe\nS1", 0.6, TABLE, TABLE, threshold=0.7).unsafe
    with pytest.raises(ValueError):
        make_verdict("safe", 0.1, TABLE, TABLE, threshold=1.5)


def test_verdict_json_shape():
    data = make_verdict("\n\nunsafe\nS11", 0.8, TABLE, TABLE, seconds=0.12345).to_json()
    assert data["verdict"] == "unsafe"
    assert data["categories"] == [{"code": "S11", "name": "Suicide & Self-Harm"}]
    assert data["seconds"] == 0.1235
