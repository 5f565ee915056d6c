"""One declared access table (guard_app.access) against the live app: every named endpoint,
route and MCP tool is declared, and every reviewer-only one refuses a visitor who is not a
signed-in reviewer, with a refusal that carries none of the reviewers' data.

The app runs as `python app.py --tiny` with reviewer accounts in its own process; the routes are
read from the FastAPI app of the same page served in this process (a process's routes cannot be
listed from outside). Real clients: gradio_client, httpx, the `mcp` package.
"""

from __future__ import annotations

import json

import httpx
import pytest
from gradio_client import Client, handle_file
from helpers import (
    endpoint_names,
    launch_app,
    run_async,
    start_app_process,
    stop_app_process,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from guard.testing.tiny import BENIGN, VIOLENT
from guard_app import access

SECRET = "zebra-7141 secret reviewer note"  # in a queue item, a run's rows and a label
REFUSED = ("Sign in as a reviewer", "Your reviewer session has expired")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_dirs):
    """The app with one reviewer account, a review queue, a stored run and a label that all
    carry SECRET, made by the signed-in reviewer through the API."""
    folder = tmp_path_factory.mktemp("access")
    server, url = start_app_process(folder, "--db", str(folder / "labels.db"),
                                    env={"GUARD_LAB_REVIEWERS": "alice:secret"})
    alice = Client(url, verbose=False)
    alice.predict("alice", "secret", api_name="/reviewer_sign_in")
    data = folder / "private.jsonl"
    data.write_text(json.dumps({"prompt": f"{BENIGN} {SECRET}", "label": "safe"}) + "\n"
                    + json.dumps({"prompt": f"{VIOLENT} {SECRET}", "label": "unsafe"}) + "\n")
    alice.predict("", "private-queue", "", "", "", None, 1, handle_file(str(data)), "jsonl",
                  api_name="/queue_create")
    alice.predict("upload", handle_file(str(data)), "jsonl", "private-run", None, 8, ["S1"], 0.5,
                  "", api_name="/evaluate")
    item = alice.predict("", "private-queue", api_name="/queue_next")["item"]
    alice.predict("", "private-queue", item["id"], "unsafe", "S1", SECRET,
                  api_name="/queue_submit")
    yield url, folder
    stop_app_process(server)


def arguments(info: dict, name: str) -> list:
    """A value for every input of an endpoint (gradio_client needs all of an undocumented one)."""
    values = []
    for parameter in info["named_endpoints"][f"/{name}"]["parameters"]:
        if parameter.get("parameter_has_default"):
            values.append(parameter.get("parameter_default"))
            continue
        kind = parameter.get("python_type", {}).get("type", "")
        if "filepath" in kind.lower() or "dict" in kind.lower():
            values.append(None)  # no file: a caller who is no reviewer is refused before
        elif "enum" in parameter.get("type", {}):  # a dropdown: one of its choices, or none
            values.append(next(iter(parameter["type"]["enum"]), None))
        elif parameter.get("example_input") is not None:  # a value the component accepts
            values.append(parameter["example_input"])
        else:
            values.append(1 if kind in ("float", "int") else False if kind == "bool"
                          else [] if kind.startswith("list") else "private-run")
    return values


def refusal(client: Client, name: str, values: list) -> str:
    try:
        result = client.predict(*values, api_name=f"/{name}")
    except Exception as exc:  # noqa: BLE001 (the refusal's text is what is checked)
        return str(exc)
    pytest.fail(f"/{name} answered a visitor who is not a reviewer: {str(result)[:300]}")


def test_every_endpoint_route_and_tool_is_declared(served, guards, tmp_path):
    url, _ = served
    names = endpoint_names(url)
    assert names, "the app lists no endpoints"
    assert access.undeclared(endpoints=names) == []

    from guard_app.reviewers import ReviewerGate
    from labels import Store

    with Store(tmp_path / "labels.db") as store:
        demo, _ = launch_app(guards, tmp_path, store=store,
                             reviewers=ReviewerGate.from_config({"a": "b"}, on_space=False))
        try:
            routes = access.route_paths(demo.server_app)
        finally:
            demo.close()
    assert "/v1/moderations" in routes and "/gradio_api/upload" in routes
    assert access.undeclared(routes=routes) == []

    async def tools():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _), \
                ClientSession(read, write) as session:
            await session.initialize()
            return [t.name for t in (await session.list_tools()).tools]

    listed = run_async(tools())
    assert listed and access.undeclared(tools=listed) == []


def test_every_reviewer_endpoint_refuses_anonymous_and_signed_out_callers(served):
    url, _ = served
    info = httpx.get(url + "gradio_api/info?all_endpoints=True").json()
    live = {name.lstrip("/") for name in info["named_endpoints"]}
    reviewer_only = [name for name in access.reviewer_only() if name in live]
    assert {"queue_create", "list_labels", "tune_status", "evaluate"} <= set(reviewer_only)

    signed_out = Client(url, verbose=False)
    signed_out.predict("alice", "secret", api_name="/reviewer_sign_in")
    signed_out.predict(api_name="/reviewer_sign_out")
    stolen = Client(url, verbose=False)  # a copy of a session hash, after its sign-out
    stolen.session_hash = signed_out.session_hash
    for caller in (Client(url, verbose=False), signed_out, stolen):
        for name in reviewer_only:
            said = refusal(caller, name, arguments(info, name))
            assert any(r in said for r in REFUSED), f"/{name}: {said[:300]}"
            for private in (SECRET, "private-queue", "private-run", "zebra"):
                assert private not in said, f"/{name} told a stranger {private!r}"


def test_gradio_routes_left_off_refuse_an_anonymous_caller(served):
    url, _ = served
    for method, path in access.GRADIO_CLOSED:
        response = httpx.request(method, url + path.lstrip("/"), timeout=30)
        assert response.status_code in (401, 403, 404, 405), (path, response.status_code)


def test_a_space_without_sign_in_has_no_reviewer_features_and_says_how_to_turn_them_on(
        tmp_path, tiny_dirs):
    env = {"SPACE_ID": "someone/guard-lab", "GUARD_LAB_HOST": "127.0.0.1"}
    server, url = start_app_process(tmp_path, env=env)
    try:
        names = {n.lstrip("/") for n in endpoint_names(url)}
        assert names and not names & set(access.reviewer_only())
        config = httpx.get(url + "config", timeout=30).text
        assert "Reviewing is off on this public Space" in config
        assert "hf_oauth: true" in config and "GUARD_LAB_REVIEWERS" in config
        # the models still answer everyone
        client = Client(url, verbose=False)
        said = client.predict(json.dumps([{"role": "user", "content": BENIGN}]), [], "", None,
                              api_name="/moderate")
        assert said["verdict"] == "safe"
    finally:
        stop_app_process(server)
