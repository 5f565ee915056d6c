"""Policies: the file format and its messages, the decision beside the model's answer, and the
immutable versions in the labels database (through `python -m labels policy`)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from helpers import REPO

from guard.core.categories import Family
from guard.core.policy import InvalidPolicy, Policy, PromptGuardPolicy, read_policy_file
from labels import policies
from labels.errors import NotFound

NO_S1 = {"name": "no-s1", "family": "llama-guard-4", "excluded": ["S1"], "threshold": 0.5}


def test_the_issue_example_is_a_whole_policy_with_defaults():
    policy = Policy.from_json(NO_S1)
    assert policy.to_json() == {
        "name": "no-s1", "description": "", "family": "llama-guard-4", "excluded": ["S1"],
        "custom": [], "threshold": 0.5, "excluded_only": "unsafe",
        "prompt_guard": {"model": "86m", "threshold": 0.9, "preprocessing": "none",
                         "flags": False}}
    assert policy.enabled == tuple(f"S{i}" for i in range(2, 15))
    assert policy.label.startswith("no-s1@draft-") and policy.version is None
    assert Policy.from_json(policy.to_json()) == policy


def test_custom_categories_are_numbered_after_the_family():
    policy = Policy.from_json({"name": "med", "family": "llama-guard-3-1b",
                               "custom": [{"name": "Medical advice", "description": "Dosages."}]})
    assert policy.enabled[-1] == "S14" and "S13" in policy.enabled  # the 1B has 13


@pytest.mark.parametrize("data, message", [
    ([], "must be a JSON object"),
    ({}, '"name" must be 1 to 64 letters'),
    ({"name": "a@2"}, "no '@', which separates the version"),
    ({"name": "x", "excluded": ["S99"]}, "'S99', which Llama Guard 4 does not have; its codes "
                                         "are S1 to S14"),
    ({"name": "x", "family": "llama-guard-2", "excluded": ["S12"]}, "Llama Guard 2 does not have"),
    ({"name": "x", "threshold": 1.5}, '"threshold" must be a number from 0 to 1, got 1.5'),
    ({"name": "x", "threshold": "0.5"}, "must be a number from 0 to 1, got '0.5'"),
    ({"name": "x", "family": "llama-guard-5"}, '"family" must be one of llama-guard-4'),
    ({"name": "x", "excluded_only": "maybe"}, '"excluded_only" must be one of unsafe, safe'),
    ({"name": "x", "prompt_guard": {"model": "44m"}}, '"prompt_guard".model must be one of '
                                                      "86m, 22m, none"),
    ({"name": "x", "prompt_guard": {"flags": "yes"}}, "flags must be true or false"),
    ({"name": "x", "threshhold": 0.4}, "unknown field 'threshhold'"),
    ({"name": "x", "custom": [{"name": "<|eot|>"}]}, "special token"),
    ({"name": "x", "excluded": [f"S{i}" for i in range(1, 15)]}, "excludes every category"),
    ({"name": "x", "version": 0}, '"version" is given by the labels store'),
])
def test_invalid_policies_say_what_to_change(data, message):
    with pytest.raises(InvalidPolicy) as refused:
        Policy.from_json(data)
    assert message in str(refused.value)


def test_a_policy_file_that_is_missing_or_not_json(tmp_path):
    with pytest.raises(InvalidPolicy, match="No policy file at"):
        read_policy_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{name: 1")
    with pytest.raises(InvalidPolicy, match="is not a JSON policy"):
        read_policy_file(tmp_path / "bad.json")


def moderation(label: str, p_unsafe: float, named=(), left_out=(), p_malicious=None) -> dict:
    """The fields of guard classify's JSON that a decision reads."""
    data = {"verdict": "unsafe" if p_unsafe >= 0.5 else "safe", "p_unsafe": p_unsafe,
            "model_label": label, "categories": [{"code": c, "name": c} for c in named],
            "excluded_codes": list(left_out)}
    if p_malicious is not None:
        data["prompt_guard"] = {"max_p_malicious": p_malicious}
    return data


def test_an_answer_naming_only_excluded_categories_counts_as_the_policy_says():
    answer = moderation("unsafe", 0.8, left_out=["S1"])
    counted = Policy.from_json({**NO_S1, "version": 3}).decide(answer)
    assert (counted.flagged, counted.categories) == (True, ())
    assert "named only S1, excluded by policy no-s1@3; it still counts" in counted.reason
    ignored = Policy.from_json({**NO_S1, "excluded_only": "safe", "version": 3}).decide(answer)
    assert ignored.flagged is False
    assert "it counts such answers as safe" in ignored.reason


def test_decision_and_answer_apart_with_the_reason():
    policy = Policy.from_json({"name": "p", "threshold": 0.9, "version": 1})
    below = policy.apply(moderation("unsafe", 0.7, named=["S2"]))
    assert below["model_answer"] == {"label": "unsafe", "named": ["S2"], "p_unsafe": 0.7}
    assert below["decision"] == {
        "policy": "p@1", "flagged": False, "verdict": "safe", "llama_guard_unsafe": False,
        "malicious": None, "categories": [],
        "reason": "The model answered unsafe, but p_unsafe 0.7 is below the threshold 0.9 of "
                  "policy p@1."}
    agreed = policy.decide(moderation("unsafe", 0.95, named=["S2"]))
    assert (agreed.flagged, agreed.categories, agreed.reason) == (True, ("S2",), "")
    low = Policy.from_json({"name": "p", "threshold": 0.2, "version": 1})
    said_safe = low.decide(moderation("safe", 0.3))
    assert said_safe.flagged and "text says 'safe', but p_unsafe 0.3 is at or above" in \
        said_safe.reason


def test_prompt_guard_flags_only_when_the_policy_says_so():
    answer = moderation("safe", 0.01, p_malicious=0.95)
    quiet = Policy.from_json({"name": "p"}).decide(answer)
    assert (quiet.flagged, quiet.malicious) == (False, True)
    strict = Policy(name="p", prompt_guard=PromptGuardPolicy(threshold=0.5, flags=True))
    flagged = strict.decide(answer)
    assert flagged.flagged and "Prompt Guard's p_malicious 0.95 is at or above 0.5" in \
        flagged.reason


def test_variants_for_a_sweep():
    policy = Policy.from_json({**NO_S1, "version": 2})
    without = policy.without("S6")
    assert (without.name, without.excluded, without.version) == ("no-s1-no-s6", ("S1", "S6"),
                                                                  None)
    only = policy.only("S6")
    assert only.enabled == ("S6",)
    Policy.from_json(without.to_json())  # a variant is a valid policy, ready to save


def test_a_policy_for_another_family_is_refused():
    with pytest.raises(InvalidPolicy, match="is for Llama Guard 4 .* the loaded model is Llama "
                                            "Guard 3 1B"):
        Policy.from_json(NO_S1).check_family(Family.LLAMA_GUARD_3_1B)


def test_saved_versions_are_immutable(store):
    first = policies.save(store, Policy.from_json(NO_S1), by="ana")
    again = policies.save(store, Policy.from_json(NO_S1))
    second = policies.save(store, Policy.from_json({**NO_S1, "threshold": 0.6}))
    assert (first.policy.label, first.new, first.created_by) == ("no-s1@1", True, "ana")
    assert (again.policy.label, again.new) == ("no-s1@1", False)
    assert second.policy.label == "no-s1@2"
    assert policies.get(store, "no-s1").threshold == 0.6
    assert policies.get(store, "no-s1@1").threshold == 0.5
    assert [p.to_json() for p in policies.list_policies(store)] == [{
        "name": "no-s1", "latest": 2, "versions": 2, "updated_at": second.created_at,
        "label": "no-s1@2"}]
    with pytest.raises(sqlite3.IntegrityError, match="policy versions are immutable"):
        store.db.execute("UPDATE policies SET body = '{}' WHERE version = 1")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        store.db.execute("DELETE FROM policies")
    with pytest.raises(NotFound, match=r"No version 3 of policy 'no-s1' .*no-s1@2"):
        policies.get(store, "no-s1@3")


def labels_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labels", "policy", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_labels_policy_commands(tmp_path):
    db = str(tmp_path / "guard_lab.db")
    path = tmp_path / "no-s1.json"
    path.write_text(json.dumps(NO_S1))
    assert labels_cli("save", str(path), "--db", db).stdout == "Saved no-s1@1.\n"
    assert "Unchanged: no-s1@1" in labels_cli("save", str(path), "--db", db).stdout
    path.write_text(json.dumps({**NO_S1, "threshold": 0.7}))
    assert labels_cli("save", str(path), "--db", db, "--by", "ana").stdout == "Saved no-s1@2.\n"
    listed = json.loads(labels_cli("list", "--db", db, "--json").stdout)
    assert [(p["label"], p["versions"]) for p in listed] == [("no-s1@2", 2)]
    shown = labels_cli("show", "no-s1@1", "--db", db).stdout
    assert shown.startswith("no-s1@1 (saved ") and "versions: 1, 2" in shown
    exported = json.loads(labels_cli("export", "no-s1", "--db", db).stdout)
    assert (exported["version"], exported["threshold"]) == (2, 0.7)
    # What export wrote is a policy file, and keeps its version when read back.
    (tmp_path / "exported.json").write_text(json.dumps(exported))
    assert read_policy_file(tmp_path / "exported.json").label == "no-s1@2"
    missing = labels_cli("show", "nope", "--db", db)
    assert missing.returncode == 2 and missing.stderr.startswith("error: No policy 'nope'")
    path.write_text(json.dumps({"name": "x", "excluded": ["S99"]}))
    bad = labels_cli("save", str(path), "--db", db)
    assert bad.returncode == 2 and "'S99', which Llama Guard 4 does not have" in bad.stderr
    nodb = labels_cli("list", "--db", str(tmp_path / "none.db"))
    assert nodb.returncode == 2 and "No database at" in nodb.stderr
