"""Who may call what: the one declared access table, and what a response may say of the server.

Every named Gradio endpoint (on the API page or undocumented), every HTTP route and every MCP
tool of the app is declared here as PUBLIC (any visitor) or REVIEWER (refused to anyone who is
not a reviewer: with accounts or Hugging Face sign-in, a signed-in one; in open mode, which only
exists off Spaces, a visitor who typed a name). `undeclared()` lists what the live app serves
that this table does not name; `tests/test_access_table.py` reads the running app and fails on
any, then calls every REVIEWER entry anonymously and with a signed-out token.

The reviewer check itself lives in each handler (`ReviewerBar.who`), so that the page, the API
and a hand-made request go through the same door; this table is what those checks must add up
to. No gradio here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

Access = Literal["public", "reviewer"]
PUBLIC: Access = "public"
REVIEWER: Access = "reviewer"

# Named Gradio endpoints (/gradio_api/info?all_endpoints=True), by api_name.
ENDPOINTS: Mapping[str, Access] = {
    # The models, the conversation editor and signing in: anyone.
    **dict.fromkeys((
        "moderate", "run", "sweep", "category_scores", "attribution",
        "tool_moderate", "tool_sweep", "tool_prompt_guard",
        "add_turn", "attach_image", "clear_conversation", "cancel_edit", "categories_all",
        "categories_none", "categories_reset", "add_custom_category", "clear_custom_categories",
        "apply_threshold", "example_benign_question", "example_harmful_request",
        "example_harmful_assistant_answer", "example_jailbreak_attempt",
        "example_conversation_with_an_image", "example_harmless_image",
        "apply", "apply_1",  # gr.render's re-rendering of the page's own state (Gradio names)
        "reviewer_sign_in", "reviewer_sign_out",
    ), PUBLIC),
    # Labels, review queues, stored runs, evaluations and tuning: reviewers.
    **dict.fromkeys((
        "save_label", "list_labels", "export_labels", "export_filtered", "open_example",
        "next_example", "edit_label", "delete_label", "agreement", "disagreements", "measure",
        "evaluate", "compare_runs", "run_rows", "run_row", "queue_create", "queue_list",
        "queue_next", "queue_submit", "queue_skip", "queue_progress", "queue_from_run",
        "tune_start", "tune_status", "lead_disagreements", "resolve_disagreement",
        "lead_view", "queue_back",
        # issue 23: "Save as policy", Batch evaluation's sweep, variant and threshold
        "save_policy", "sweep_dataset", "save_variant", "suggest_threshold",
        # issue 24: Prompt Guard labels (Labeled examples: edit, a lead's disagreements)
        "save_prompt_guard_labels", "prompt_guard_disagreements", "resolve_prompt_guard",
        "save_label_prompt_guard", "queue_submit_prompt_guard",
    ), REVIEWER),
}

# HTTP routes of the FastAPI app, by path: ours, then Gradio's (gradio 6.31, the locked
# version; a Gradio that adds a route fails tests/test_access_table.py until it is declared).
ROUTES: Mapping[str, Access] = {
    "/v1/moderations": PUBLIC,  # GUARD_LAB_API_KEY, when set, is asked for here
    "/gradio_api/guard-lab/export/{token}": REVIEWER,  # signed, once, the session that made it
    "/gradio_api/upload": PUBLIC,  # a per-visitor quota, swept (guard_app.uploads)
    "/gradio_api/mcp": PUBLIC,  # the MCP tools below
    # Gradio's: the page and its assets, configuration, the queue (events reach the endpoints
    # above, which check for themselves), the files of its cache (uploads and outputs, never
    # exports), and features this app does not turn on (monitoring asks for a key; vibe editing
    # and reload exist only in Gradio's dev modes).
    **dict.fromkeys((
        "/", "/assets/{path:path}", "/config", "/config/", "/favicon.ico", "/login", "/login/",
        "/logout", "/manifest.json", "/monitoring", "/monitoring/summary", "/monitoring/{key}",
        "/openapi.json", "/pwa_icon", "/pwa_icon/{size}", "/robots.txt", "/static/{path:path}",
        "/svelte/{path:path}", "/theme.css",
        "/gradio_api/api/{api_name}", "/gradio_api/api/{api_name}/", "/gradio_api/app_id",
        "/gradio_api/app_id/", "/gradio_api/call/v2/{api_name}", "/gradio_api/call/v2/{api_name}/",
        "/gradio_api/call/v2/{api_name}/{event_id}", "/gradio_api/call/{api_name}",
        "/gradio_api/call/{api_name}/", "/gradio_api/call/{api_name}/{event_id}",
        "/gradio_api/cancel", "/gradio_api/component_server", "/gradio_api/component_server/",
        "/gradio_api/custom_component/{id}/{environment}/{type}/{file_name}",
        "/gradio_api/deep_link", "/gradio_api/dev/reload", "/gradio_api/file/{path:path}",
        "/gradio_api/file={path_or_url:path}", "/gradio_api/heartbeat/{session_hash}",
        "/gradio_api/info", "/gradio_api/info/", "/gradio_api/login_check",
        "/gradio_api/login_check/", "/gradio_api/openapi.json", "/gradio_api/process_recording",
        "/gradio_api/proxy={url_path:path}", "/gradio_api/queue/data", "/gradio_api/queue/join",
        "/gradio_api/queue/status", "/gradio_api/reset", "/gradio_api/reset/",
        "/gradio_api/run-history/buckets", "/gradio_api/run-history/connect",
        "/gradio_api/run-history/records",
        "/gradio_api/run-history/records/{endpoint}/{record_id}/assets/{asset_id}",
        "/gradio_api/run/{api_name}", "/gradio_api/run/{api_name}/", "/gradio_api/runs",
        "/gradio_api/runs/", "/gradio_api/startup-events", "/gradio_api/stream/{event_id}",
        "/gradio_api/stream/{event_id}/close",
        "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist-file",
        "/gradio_api/stream/{session_hash}/{run}/{component_id}/playlist.m3u8",
        "/gradio_api/stream/{session_hash}/{run}/{component_id}/{segment_id}.{ext}",
        "/gradio_api/theme.css", "/gradio_api/token", "/gradio_api/token/",
        "/gradio_api/undo-vibe-edit", "/gradio_api/undo-vibe-edit/", "/gradio_api/upload_progress",
        "/gradio_api/user", "/gradio_api/user/", "/gradio_api/vibe-code", "/gradio_api/vibe-code/",
        "/gradio_api/vibe-edit", "/gradio_api/vibe-edit/", "/gradio_api/vibe-starter-queries",
        "/gradio_api/vibe-starter-queries/",
    ), PUBLIC),
}
# Gradio routes this app leaves off, which must refuse an anonymous caller (the access test
# calls each): run history, vibe editing, files outside Gradio's cache.
GRADIO_CLOSED = (("GET", "/gradio_api/run-history/records"),
                 ("GET", "/gradio_api/run-history/buckets"), ("GET", "/gradio_api/vibe-code"),
                 ("POST", "/gradio_api/vibe-starter-queries"),
                 ("GET", "/gradio_api/file=/etc/hostname"))

# MCP tools (tools/list of /gradio_api/mcp/), by tool name.
MCP_TOOLS: Mapping[str, Access] = {"moderate": PUBLIC, "sweep": PUBLIC, "prompt_guard": PUBLIC}


def reviewer_only() -> list[str]:
    return sorted(name for name, access in ENDPOINTS.items() if access == REVIEWER)


def undeclared(endpoints: Iterable[str] = (), routes: Iterable[str] = (),
               tools: Iterable[str] = ()) -> list[str]:
    """What a live app serves that the table does not declare, e.g. ['endpoint /new_thing']."""
    missing = [f"endpoint /{e.lstrip('/')}" for e in endpoints if e.lstrip("/") not in ENDPOINTS]
    missing += [f"route {r}" for r in routes if r not in ROUTES]
    missing += [f"MCP tool {t}" for t in tools if t not in MCP_TOOLS]
    return sorted(missing)


def model_id(name: str) -> str:
    """What a response may call a model: its id (`meta-llama/Llama-Guard-4-12B`), or for a
    folder or file on this server only its last part, never the server path."""
    text = str(name)
    path = Path(text)
    if path.is_absolute() or text.startswith((".", "~")) or path.exists():
        return path.name or text
    return text


def route_paths(app: object) -> list[str]:
    """Every HTTP path the FastAPI `app` serves, routers included and mounts by their prefix."""
    found: list[str] = []

    def walk(routes: Iterable[object], prefix: str) -> None:
        for route in routes:
            original = getattr(route, "original_router", None)  # an included router
            if original is not None:
                context = getattr(route, "include_context", None)
                walk(original.routes, prefix + getattr(context, "prefix", ""))
            elif getattr(route, "path", None) is not None:
                found.append(prefix + route.path)
    walk(getattr(app, "routes", ()), "")
    return sorted(set(found))
