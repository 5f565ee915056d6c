"""One policy, the same decision everywhere: the CLI, gradio_client, the openai SDK, MCP.

The app runs on the tiny models over a real labels database holding saved policies; each client
sends the same conversation naming the same policy, and each must return the same decision,
the same model answer and the same policy version. The tiny Llama Guard answers "unsafe\\nS1"
to VIOLENT and "safe" once S1 is left out, so "no-s1" flips the decision and "everything"
does not: a client that dropped the policy would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gradio_client import Client
from helpers import REPO, launch_app, run_async, tiny_cache_dir
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from guard.core.policy import Policy
from guard.testing.tiny import BENIGN, VIOLENT
from labels import policies
from labels.store import Store

POLICIES = {
    "no-s1": {"name": "no-s1", "family": "llama-guard-4", "excluded": ["S1"], "threshold": 0.5},
    "everything": {"name": "everything"},
    # The model answers unsafe to VIOLENT (p_unsafe about 0.99); this threshold overrules it.
    "lenient": {"name": "lenient", "threshold": 0.9999},
}
MESSAGES = [{"role": "user", "content": VIOLENT}]


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy-clients")
    store = Store(folder / "labels.db")
    for body in POLICIES.values():
        policies.save(store, Policy.from_json(body))
    policies.save(store, Policy.from_json({**POLICIES["no-s1"], "threshold": 0.6}))  # no-s1@2
    demo, url = launch_app(guards, folder, store=store)
    yield url, store, folder
    demo.close()
    store.close()


def by_cli(folder, store_path, name: str) -> dict:
    """`labels policy export` to a file, then `guard classify --policy FILE`."""
    env = {**os.environ, "GUARD_LAB_TINY_DIR": str(tiny_cache_dir())}
    exported = subprocess.run([sys.executable, "-m", "labels", "policy", "export", name,
                               "--db", str(store_path)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    policy_file = folder / f"{name.replace('@', '-')}.json"
    policy_file.write_text(exported.stdout)
    conversation = folder / "conversation.json"
    conversation.write_text(json.dumps(MESSAGES))
    result = subprocess.run([sys.executable, "-m", "guard", "classify", str(conversation),
                             "--tiny", "--policy", str(policy_file)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_gradio(url: str, name: str) -> dict:
    return Client(url, verbose=False).predict(json.dumps(MESSAGES), [], "", None, "none", name,
                                              api_name="/moderate")


def by_openai(url: str, name: str) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url + "v1", api_key="unused")
    result = client.moderations.create(input="", extra_body={"messages": MESSAGES,
                                                              "policy": name}).results[0]
    return result.model_dump()


def by_mcp(url: str, arguments: dict) -> tuple[bool, str]:
    async def main():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool("moderate", arguments)
    result = run_async(main())
    return result.isError, result.content[0].text


@pytest.mark.parametrize("name, flagged, said", [
    ("no-s1@1", False, "safe"), ("everything", True, "unsafe"), ("lenient", False, "unsafe")])
def test_the_same_policy_decides_the_same_everywhere(served, name, flagged, said):
    url, store, folder = served
    cli = by_cli(folder, store.path, name)
    page = by_gradio(url, name)
    sdk = by_openai(url, name)
    error, text = by_mcp(url, {"messages": MESSAGES, "policy": name})
    assert not error, text
    agent = json.loads(text)
    label = policies.get(store, name).label
    for result in (cli, page, agent):
        assert result["policy"] == label
        assert result["decision"]["flagged"] is flagged
        assert result["decision"]["policy"] == label
        assert result["model_answer"]["label"] == said
    assert sdk["flagged"] is flagged and agent["flagged"] is flagged
    assert sdk["policy"] == label and sdk["decision"] == page["decision"]
    # The three clients of the server read one engine; the CLI loads its own copy of the tiny
    # model in another process, whose CPU threads may sum in another order (last digits).
    assert sdk["model_answer"] == page["model_answer"] == agent["model_answer"]
    assert {k: v for k, v in cli["model_answer"].items() if k != "p_unsafe"} == \
        {k: v for k, v in page["model_answer"].items() if k != "p_unsafe"}
    for result in (cli, sdk, agent):
        assert result["p_unsafe"] == pytest.approx(page["p_unsafe"], abs=1e-3)


def test_model_answer_and_decision_apart_with_the_reason(served):
    url, *_ = served
    sdk = by_openai(url, "lenient")
    assert sdk["model_answer"]["label"] == "unsafe" and sdk["flagged"] is False
    assert "below the threshold 0.9999 of policy lenient@1" in sdk["decision"]["reason"]
    assert sdk["categories"]["violent_crimes"] is False  # flagged categories follow the decision


def test_latest_version_unless_one_is_named(served):
    url, *_ = served
    assert by_gradio(url, "no-s1")["policy"] == "no-s1@2"
    assert by_gradio(url, "no-s1@1")["policy"] == "no-s1@1"
    assert by_gradio(url, "no-s1")["threshold"] == 0.6


def test_without_a_policy_the_loose_settings_decide_and_nothing_is_recorded(served):
    url, *_ = served
    sdk = by_openai(url, "")
    assert sdk["flagged"] is True and sdk["policy"] is None and sdk["decision"]["policy"] is None
    page = Client(url, verbose=False).predict(json.dumps([{"role": "user", "content": BENIGN}]),
                                              [], "", 0.5, api_name="/moderate")
    assert page["decision"]["flagged"] is False and page["policy"] is None


def test_refusals_say_what_to_do(served):
    import openai
    from openai import OpenAI

    url, *_ = served
    client = OpenAI(base_url=url + "v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.moderations.create(input="", extra_body={"messages": MESSAGES, "policy": "nope"})
    assert "No policy 'nope'" in str(unknown.value) and "everything@1" in str(unknown.value)
    with pytest.raises(openai.BadRequestError) as both:
        client.moderations.create(input="", extra_body={"messages": MESSAGES, "policy": "no-s1",
                                                        "threshold": 0.3})
    assert "not both" in str(both.value)
    with pytest.raises(openai.BadRequestError) as bad:
        client.moderations.create(input="", extra_body={
            "messages": MESSAGES, "policy": {"name": "x", "excluded": ["S99"]}})
    assert "'S99', which Llama Guard 4 does not have" in str(bad.value)
    error, text = by_mcp(url, {"messages": MESSAGES, "policy": "nope"})
    assert error and "No policy 'nope'" in text


def test_an_inline_policy_object_is_enforced_unrecorded(served):
    url, *_ = served
    sdk = by_openai(url, {"name": "draft", "excluded": ["S1"]})
    assert sdk["flagged"] is False and sdk["policy"].startswith("draft@draft-")
