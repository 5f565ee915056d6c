"""`moderate()`'s typed result: `Moderation.to_json()` is the JSON of `python -m guard classify`
(README, "Command line"), and `Moderation.from_json` rebuilds it exactly."""

import json

import pytest

from guard.core.conversation import Conversation, assistant, user
from guard.core.prompt_guard_text import MessageScore, PromptGuardInfo, TextScore
from guard.core.verdict import CategoryHit, Verdict
from guard.engines.engine import Capabilities, ModelInfo
from guard.engines.service import Guards, Moderation, PromptGuardResult, Timings, moderate
from guard.testing.tiny import BENIGN, VIOLENT

VERDICT = Verdict(unsafe=True, p_unsafe=0.98765432, threshold=0.5,
                  categories=(CategoryHit("S1", "Violent Crimes"),), raw_output="\n\nunsafe\nS1",
                  model_label="unsafe", prompt_tokens=120, seconds=0.123456, model="lg",
                  family="llama-guard-4")
INFO = ModelInfo(name="lg", family="llama-guard-4", device="cpu", dtype="float32", revision=None,
                 context_limit=2048, multimodal=True,
                 capabilities=Capabilities(images=True, category_scores=True, batching=True,
                                           adapters=True))
SCORES = (MessageScore(0, "user", TextScore(0.91234567, 1, 2, (0.1, 0.91234567), 700, 0.01234567)),
          MessageScore(2, "user", TextScore(0.2, 0, 1, (0.2,), 5, 0.002)))
PG = PromptGuardResult(PromptGuardInfo("pg", "cpu", 512), "none", SCORES)
MODERATION = Moderation(verdict=VERDICT, judged_role="User", excluded=("S2",),
                        enabled_categories=("S1", "S3"), llama_guard=INFO, prompt_guard=PG,
                        timings=Timings(0.1235, 0.0143, 0.2))
EXPECTED = {
    "unsafe": True, "p_unsafe": 0.987654, "threshold": 0.5,
    "categories": [{"code": "S1", "name": "Violent Crimes"}], "raw_output": "\n\nunsafe\nS1",
    "model_label": "unsafe", "unknown_codes": (), "excluded_codes": (), "prompt_tokens": 120,
    "images": 0, "seconds": 0.1235, "model": "lg", "family": "llama-guard-4",
    "special_token_text": False, "prompt_marker_text": False, "verdict": "unsafe",
    "judged_role": "User", "excluded": ["S2"], "enabled_categories": ["S1", "S3"],
    "llama_guard": {"name": "lg", "family": "llama-guard-4", "device": "cpu", "dtype": "float32",
                    "revision": None, "context_limit": 2048, "multimodal": True,
                    "engine": "transformers",
                    "capabilities": {"images": True, "category_scores": True, "batching": True,
                                     "adapters": True}},
    "prompt_guard": {
        "name": "pg", "device": "cpu", "window": 512, "revision": None, "preprocessing": "none",
        "messages": [
            {"index": 0, "role": "user", "p_malicious": 0.912346, "window": 1, "windows": 2,
             "window_scores": [0.1, 0.912346], "tokens": 700, "seconds": 0.0123,
             "preprocessing": "none", "preprocessing_changed_text": False},
            {"index": 2, "role": "user", "p_malicious": 0.2, "window": 0, "windows": 1,
             "window_scores": [0.2], "tokens": 5, "seconds": 0.002, "preprocessing": "none",
             "preprocessing_changed_text": False}],
        "max_p_malicious": 0.912346},
    "timings": {"llama_guard_s": 0.1235, "prompt_guard_s": 0.0143, "total_s": 0.2},
}
# The top-level keys in the order `python -m guard classify` prints them.
ORDER = ["unsafe", "p_unsafe", "threshold", "categories", "raw_output", "model_label",
         "unknown_codes", "excluded_codes", "prompt_tokens", "images", "seconds", "model",
         "family", "special_token_text", "prompt_marker_text", "verdict", "judged_role",
         "excluded", "enabled_categories", "llama_guard", "prompt_guard", "timings"]


def test_to_json_is_the_classify_json_key_for_key_in_order():
    data = MODERATION.to_json()
    assert data == EXPECTED
    assert list(data) == ORDER
    assert list(data["prompt_guard"]) == list(EXPECTED["prompt_guard"])
    assert list(data["prompt_guard"]["messages"][0]) == list(EXPECTED["prompt_guard"]["messages"][0])


def test_from_json_rebuilds_it_exactly_also_after_a_trip_through_json_text():
    data = MODERATION.to_json()
    rebuilt = Moderation.from_json(data)
    assert rebuilt.to_json() == data
    assert Moderation.from_json(json.loads(json.dumps(data))) == rebuilt
    assert rebuilt.verdict.category_codes == ("S1",)
    assert rebuilt.llama_guard == INFO
    assert rebuilt.prompt_guard.max_p_malicious == 0.912346


def test_a_guard_that_did_not_run_leaves_its_keys_out():
    lg_only = Moderation(VERDICT, "User", (), ("S1",), INFO, None, Timings(0.1235, None, 0.13))
    assert "prompt_guard" not in lg_only.to_json()
    assert lg_only.to_json()["timings"] == {"llama_guard_s": 0.1235, "prompt_guard_s": None,
                                            "total_s": 0.13}
    pg_only = Moderation(None, None, (), (), None, PG, Timings(None, 0.0143, 0.02))
    assert list(pg_only.to_json()) == ["prompt_guard", "timings"]
    for moderation in (lg_only, pg_only):
        assert Moderation.from_json(moderation.to_json()).to_json() == moderation.to_json()
    assert PromptGuardResult(PG.model, "none", ()).to_json()["max_p_malicious"] == 0.0


def test_model_info_from_before_capabilities_claims_none():
    old = {k: v for k, v in INFO.to_json().items() if k != "capabilities"}
    assert ModelInfo.from_json(old).capabilities == Capabilities()


def test_moderate_on_the_tiny_models_gives_the_fields_the_readme_documents(guards):
    conversation = Conversation.build([user(VIOLENT)])
    moderation = moderate(guards, conversation, ["S2"])
    data = moderation.to_json()
    assert list(data) == ORDER
    # What each part says is what the engines say on their own (all but the times).
    alone = guards.llama_guard.classify(conversation, ["S2"]).to_json()
    assert {k: v for k, v in data.items() if k in alone and k != "seconds"} == \
        {k: v for k, v in alone.items() if k != "seconds"}
    assert data["verdict"] == "unsafe" and data["categories"][0]["code"] == "S1"
    assert (data["judged_role"], data["excluded"]) == ("User", ["S2"])
    assert data["enabled_categories"] == [f"S{i}" for i in (1, *range(3, 15))]
    assert {k: data["llama_guard"][k] for k in ("device", "dtype", "context_limit", "engine")} \
        == {"device": "cpu", "dtype": "float32", "context_limit": 2048, "engine": "transformers"}
    assert data["llama_guard"]["capabilities"] == {"images": True, "category_scores": True,
                                                   "batching": True, "adapters": True}
    pg = data["prompt_guard"]
    assert pg["preprocessing"] == "none" and [m["role"] for m in pg["messages"]] == ["user"]
    assert {"p_malicious", "window", "window_scores", "tokens"} <= set(pg["messages"][0])
    assert pg["max_p_malicious"] == max(m["p_malicious"] for m in pg["messages"])
    # The rounding of today's JSON: scores to 6 places, seconds to 4.
    assert data["p_unsafe"] == round(moderation.verdict.p_unsafe, 6)
    assert data["timings"]["llama_guard_s"] == data["seconds"]
    assert data["timings"]["prompt_guard_s"] == round(sum(m["seconds"] for m in pg["messages"]), 4)
    assert Moderation.from_json(data).to_json() == data


def test_moderate_without_llama_guard_scores_prompt_guard_alone(prompt_guard):
    conversation = Conversation.build([user(BENIGN), assistant("Mix flour and water.")])
    moderation = moderate(Guards(None, prompt_guard), conversation, include_assistant=True)
    assert moderation.verdict is None and moderation.llama_guard is None
    assert list(moderation.to_json()) == ["prompt_guard", "timings"]
    assert moderation.timings.llama_guard_s is None
    assert [m.role for m in moderation.prompt_guard.messages] == ["user", "assistant"]


@pytest.mark.parametrize("name", ["verdict", "prompt_guard"])
def test_the_parts_are_frozen(name):
    with pytest.raises(AttributeError):
        setattr(MODERATION, name, None)


def test_the_page_can_rebuild_it_without_loading_torch():
    import subprocess
    import sys

    from helpers import REPO

    code = ("import sys; from guard.engines.service import Moderation; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
