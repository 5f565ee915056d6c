"""The app as an MCP server, through the `mcp` package's own client (streamable HTTP)."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from gradio_client import Client
from helpers import launch_app, run_async
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from guard.testing.tiny import BENIGN, JAILBREAK, PICTURE, RED, VIOLENT, swatch


@pytest.fixture(scope="module")
def url(guards, tmp_path_factory):
    demo, url = launch_app(guards, tmp_path_factory.mktemp("mcp"))
    yield url
    demo.close()


def session_run(url: str, work):
    """Open an MCP session on the app, run `work(session)`, close it."""
    async def main():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)
    return run_async(main())


def call(url: str, tool: str, arguments: dict):
    async def work(session):
        return await session.call_tool(tool, arguments)
    return session_run(url, work)


def verdict(result) -> dict:
    assert not result.isError, result.content
    (content,) = result.content
    return json.loads(content.text)


def test_exactly_the_three_tools_with_documented_parameters(url):
    async def work(session):
        return (await session.list_tools()).tools

    tools = {t.name: t for t in session_run(url, work)}
    assert set(tools) == {"moderate", "sweep", "prompt_guard"}
    moderate = tools["moderate"]
    assert moderate.description.startswith("Check a conversation for harmful content")
    schema = moderate.inputSchema
    assert schema["required"] == ["messages"]
    assert set(schema["properties"]) == {"messages", "excluded_categories", "threshold",
                                         "policy"}
    assert all(p.get("description") for p in schema["properties"].values())
    assert schema["properties"]["messages"]["type"] == "array"
    assert set(tools["sweep"].inputSchema["properties"]) == {
        "messages", "excluded_categories", "threshold", "only_one"}
    assert tools["prompt_guard"].inputSchema["required"] == ["text"]


def test_moderate_reads_the_verdict(url):
    unsafe = verdict(call(url, "moderate", {"messages": [{"role": "user", "content": VIOLENT}]}))
    assert (unsafe["verdict"], unsafe["categories"], unsafe["judged_role"]) == (
        "unsafe", [{"code": "S1", "name": "Violent Crimes"}], "User")
    assert unsafe["prompt_guard"]["max_p_malicious"] < 0.5
    safe = verdict(call(url, "moderate", {"messages": [{"role": "user", "content": VIOLENT}],
                                          "excluded_categories": ["S1"], "threshold": 0.5}))
    assert (safe["verdict"], safe["excluded"]) == ("safe", ["S1"])


def test_moderate_takes_an_image_as_a_data_url(url):
    buffer = io.BytesIO()
    swatch(RED).save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    result = verdict(call(url, "moderate", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": PICTURE}, {"type": "image_url", "image_url": {"url": image}}]}]}))
    assert (result["verdict"], result["images"]) == ("unsafe", 1)


def test_sweep_and_prompt_guard(url):
    sweep = verdict(call(url, "sweep", {"messages": [{"role": "user", "content": VIOLENT}]}))
    assert sweep["summary"].startswith("Excluding S1 flips the verdict to safe.")
    attack = verdict(call(url, "prompt_guard", {"text": JAILBREAK}))
    assert (attack["malicious"], attack["threshold"]) == (True, 0.9)
    assert verdict(call(url, "prompt_guard", {"text": BENIGN}))["malicious"] is False


def test_a_refusal_is_a_tool_error_that_says_what_to_fix(url):
    result = call(url, "moderate", {"messages": [{"role": "assistant", "content": "hi"}]})
    assert result.isError
    assert "Message 1 must be a user message" in result.content[0].text


def test_the_plumbing_is_hidden_but_still_callable(url):
    listed = httpx.get(url + "gradio_api/info").json()["named_endpoints"]  # the API page's list
    assert set(listed) == {"/tool_moderate", "/tool_sweep", "/tool_prompt_guard",  # MCP's tools
                           "/moderate", "/sweep", "/category_scores", "/attribution",  # API tab
                           "/run"}
    callable_ = httpx.get(url + "gradio_api/info?all_endpoints=True").json()["named_endpoints"]
    assert {"/add_turn", "/clear_conversation", "/categories_all"} <= set(callable_)
    assert {callable_[n]["api_visibility"] for n in ("/add_turn", "/example_benign_question")} \
        == {"undocumented"}
    client = Client(url, verbose=False)
    client.predict(api_name="/clear_conversation")
    client.predict("user", VIOLENT, api_name="/add_turn")
    out = client.predict(["S1"], 0.5, "86m", api_name="/run")
    assert next(o for o in out if isinstance(o, dict) and "verdict" in o)["verdict"] == "unsafe"
    result = client.predict(json.dumps([{"role": "user", "content": VIOLENT}]), [], "", None,
                            api_name="/moderate")
    assert result["verdict"] == "unsafe"
