"""Sweeps, per-category scores and attribution on the tiny Llama Guard, with known answers."""

import pytest

from guard.explore import attribution, category_scores, first_code_probability, sweep
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES

VIOLENT = LLAMA_GUARD_EXAMPLES["violent"]


def test_sweep_shows_which_toggle_flips_the_verdict(llama_guard):
    variants = sweep(llama_guard, VIOLENT.conversation())
    assert [v.name for v in variants][:3] == ["all enabled", "without S1", "without S2"]
    assert len(variants) == 15
    assert variants[0].verdict.category_codes == ("S1",) and not variants[0].flips
    assert [v.name for v in variants if v.flips] == ["without S1"]
    assert variants[1].excluded == ("S1",) and not variants[1].verdict.unsafe


def test_sweep_equals_separate_calls(llama_guard):
    conversation = LLAMA_GUARD_EXAMPLES["weapon"].conversation()
    for variant in sweep(llama_guard, conversation, ["S13"]):
        alone = llama_guard.classify(conversation, variant.excluded)
        assert variant.verdict.raw_output == alone.raw_output
        assert variant.verdict.p_unsafe == pytest.approx(alone.p_unsafe, abs=2e-3)


def test_sweep_with_only_one_category_enabled(llama_guard):
    variants = sweep(llama_guard, VIOLENT.conversation(), only_one=True)
    only = {v.name: v for v in variants if v.name.startswith("only ")}
    assert len(only) == 14
    assert only["only S1"].verdict.unsafe and not only["only S1"].flips
    assert set(only["only S1"].excluded) == {f"S{i}" for i in range(2, 15)}


@pytest.mark.parametrize("name, top", [("violent", "S1"), ("weapon", "S9"),
                                       ("four_blue_one_red", "S1"), ("harmful_answer", "S2")])
def test_category_scores_rank_the_answered_code_first(llama_guard, name, top):
    example = LLAMA_GUARD_EXAMPLES[name]
    scores = category_scores(llama_guard, example.conversation(), example.excluded)
    assert scores[0].code == top and scores[0].share > 0.9
    assert sum(s.share for s in scores) == pytest.approx(1.0)
    assert all(0.0 <= s.probability <= 1.0 for s in scores)


def test_category_scores_match_full_teacher_forcing(llama_guard):
    conversation = LLAMA_GUARD_EXAMPLES["four_blue_one_red"].conversation()
    scores = {s.code: s.probability for s in category_scores(llama_guard, conversation)}
    for code in ("S1", "S9", "S10", "S2"):
        assert scores[code] == pytest.approx(first_code_probability(llama_guard, conversation, code),
                                             rel=1e-3, abs=1e-6)


def test_category_scores_skip_excluded_codes(llama_guard):
    scores = category_scores(llama_guard, VIOLENT.conversation(), ["S9", "S2"])
    assert {s.code for s in scores} == {f"S{i}" for i in range(1, 15)} - {"S9", "S2"}


def test_attribution_finds_the_turn_and_the_image(llama_guard):
    two_turns = attribution(llama_guard, LLAMA_GUARD_EXAMPLES["two_turns_with_image"].conversation())
    assert [(v.name, v.verdict.verdict) for v in two_turns] == [
        ("up to message 1", "safe"), ("up to message 2", "safe"), ("up to message 3", "unsafe"),
        ("without image 1 (message 3)", "safe")]
    five = attribution(llama_guard, LLAMA_GUARD_EXAMPLES["four_blue_one_red"].conversation())
    assert [v.name for v in five if v.flips] == ["without image 4 (message 1)"]


def test_category_scores_are_refused_on_an_engine_without_logits():
    from guard.core.conversation import Conversation, user
    from guard.engines.openai_engine import OpenAIGuard
    from guard.explore import NoCategoryScores

    with (OpenAIGuard("http://127.0.0.1:9/v1", "meta-llama/Llama-Guard-4-12B") as remote,
          pytest.raises(NoCategoryScores, match="transformers engine .* runs on openai")):
        category_scores(remote, Conversation.build([user("Hello")]))
