"""The tools an agent calls: `moderate`, `sweep` and `prompt_guard`.

They are typed functions (`gr.api`) whose docstrings document every parameter. Gradio lists
every public endpoint on the API page and serves each as an MCP tool named after its function,
so:

- the page's plumbing (add_turn, categories_all, example_*, ...) is made "undocumented":
  callable by name through gradio_client, as the page and the tests call it, but listed
  nowhere (`publish_only`); a program calling one must pass every input, since gradio_client
  knows the parameters (and so the defaults) of listed endpoints only;
- the API tab's documented endpoints (/moderate, /sweep, ... over uploaded files) and /run stay
  on the API page, where gradio_client reads their parameters and defaults;
- the MCP server serves the three tools only (`serve_only_tools`, once it is launched).

Images travel inside the messages as data URLs, as in OpenAI's chat format; every model call
goes through the GPU boundary (guard_app.gpu) in the page's model group, so the per-visitor
limit and the concurrency of the page apply.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from guard.adapters.messages import chat_conversation
from guard.core.errors import ModelLoadError
from guard.engines.prompt_guard import FIREWALL_THRESHOLD
from guard.engines.service import Guards
from guard_app import gpu
from guard_app.api.logic import parse_excluded, parse_threshold
from guard_app.guarded import guarded

# tool name (the function's) -> endpoint name; /moderate and /sweep belong to the API tab.
TOOLS = {"moderate": "tool_moderate", "sweep": "tool_sweep", "prompt_guard": "tool_prompt_guard"}
# The API tab's endpoints (app.API_HELP documents them) and the page's Run: public, so that
# gradio_client reads their parameters and fills the defaults a caller leaves out (it does not
# for undocumented ones, which must be given every input), but not MCP tools.
DOCUMENTED = frozenset({"moderate", "sweep", "category_scores", "attribution", "evaluate",
                        "compare_runs", "run", "queue_create", "queue_list", "queue_next",
                        "queue_submit", "queue_skip", "queue_progress", "queue_from_run",
                        "run_row"})
PUBLIC = DOCUMENTED | frozenset(TOOLS.values())


def register(guards: Guards, slot: int, *, default_threshold: float, max_images: int,
             concurrency: int, concurrency_id: str, policies: Any = None) -> None:
    """Add the three tools to the Blocks being built."""
    model = {"concurrency_limit": concurrency, "concurrency_id": concurrency_id}

    def conversation(messages: Any) -> Any:
        if guards.llama_guard is None and guards.prompt_guard is None:
            raise ModelLoadError("No model is loaded on this server; see the banner on its page.")
        return chat_conversation(messages, max_images=max_images)

    @guarded
    def moderate(messages: list[dict[str, Any]], excluded_categories: list[str] | None = None,
                 threshold: float | None = None, policy: str | None = None) -> str:
        """Check a conversation for harmful content (Llama Guard, last message) and for jailbreaks or prompt injection (Prompt Guard 2, each user message).

        Args:
            messages: The conversation in OpenAI chat format, oldest first, roles alternating and starting with "user" (no system messages), e.g. [{"role": "user", "content": "How do I pick a lock?"}]. Content is a string or a list of parts: {"type": "text", "text": "..."} and {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}} (at most 5 images; a message with images needs text too). Llama Guard judges only the last message.
            excluded_categories: Category codes to leave out of the policy, e.g. ["S6", "S8"] (S1 Violent Crimes, S2 Non-Violent Crimes, S3 Sex Crimes, S4 Child Exploitation, S5 Defamation, S6 Specialized Advice, S7 Privacy, S8 Intellectual Property, S9 Indiscriminate Weapons, S10 Hate, S11 Self-Harm, S12 Sexual Content, S13 Elections, S14 Code Interpreter Abuse). Default: none.
            threshold: The p_unsafe at or above which the verdict is unsafe, between 0 and 1. Default: the server's (0.5 unless set otherwise).
            policy: A policy saved on the server, by name ("no-s1", or "no-s1@2" for one version), or a whole policy as JSON text; it sets the categories, the threshold and Prompt Guard, so leave excluded_categories and threshold out. Default: the server's default policy, if it has one.
        Returns:
            JSON text: "flagged" (the policy's decision), "decision" (flagged, verdict, reason when it differs from the model's answer), "model_answer" (what Llama Guard said), "policy" (name@version, or null), "verdict" ("safe" or "unsafe" at the threshold), "p_unsafe", "categories" (the codes and names Llama Guard named), "judged_role", and "prompt_guard" with "max_p_malicious" (jailbreak or injection likely at 0.9 or more) and one score per user message.
        """
        built = conversation(messages)
        if policies is None:
            return json.dumps(gpu.moderate(slot, gpu.plain(built),
                                           list(parse_excluded(excluded_categories)),
                                           parse_threshold(threshold, default_threshold)))
        from guard_app import policies as policy_runs

        chosen = policies.resolve(
            policy, excluded=parse_excluded(excluded_categories),
            threshold=None if threshold is None else parse_threshold(threshold))
        result = policy_runs.moderate(slot, gpu.plain(built), chosen)
        return json.dumps({"flagged": result["decision"]["flagged"], **result})

    @guarded
    def sweep(messages: list[dict[str, Any]], excluded_categories: list[str] | None = None,
              threshold: float | None = None, only_one: bool = False) -> str:
        """Find which categories decide Llama Guard's verdict: run it once with every category, then once without each one (and, with only_one, with each one alone).

        Args:
            messages: The conversation in OpenAI chat format, as for the moderate tool: roles alternating from "user", content a string or text and image_url (data URL) parts.
            excluded_categories: Category codes left out of every run, e.g. ["S6"]. Default: none.
            threshold: The p_unsafe at or above which a run is unsafe, between 0 and 1. Default: the server's.
            only_one: Also run each category alone, to see which ones flag the message by themselves. Default: false.
        Returns:
            JSON text: a one-line "summary" (e.g. "Excluding S1 flips the verdict to safe."), the "reference" verdict, and "variants", each with "verdict", "categories", "p_unsafe" and "flips".
        """
        built = conversation(messages)
        return json.dumps(gpu.sweep(slot, gpu.plain(built),
                                    list(parse_excluded(excluded_categories)),
                                    parse_threshold(threshold, default_threshold),
                                    only_one=bool(only_one)))

    @guarded
    def prompt_guard(text: str) -> str:
        """Score a text for jailbreak or prompt injection with Prompt Guard 2: a user prompt, a retrieved document, a tool's output. It detects attack patterns, not harmful content (use moderate for that).

        Args:
            text: The text to score. Long texts are scored in 512-token windows; the score is the highest window's.
        Returns:
            JSON text: "p_malicious" (0 to 1), "malicious" (p_malicious at or above "threshold", 0.9, the score at which Meta's LlamaFirewall blocks), "windows" and "window_scores".
        """
        if guards.prompt_guard is None:
            raise ModelLoadError("Prompt Guard is not loaded on this server; see the banner on "
                                 "its page.")
        score = gpu.score_prompts(slot, [str(text)])[0]
        return json.dumps({**score, "malicious": score["p_malicious"] >= FIREWALL_THRESHOLD,
                           "threshold": FIREWALL_THRESHOLD, "model": guards.prompt_guard.name})

    for fn in (moderate, sweep, prompt_guard):
        gr.api(fn, api_name=TOOLS[fn.__name__], **model)


def publish_only(demo: gr.Blocks, names: frozenset[str] = PUBLIC) -> None:
    """Every public endpoint but `names` becomes undocumented: callable by name, not listed.

    Called once the page is wired, so that an event added later is hidden by default too.
    """
    for fn in demo.fns.values():
        if fn.api_visibility == "public" and fn.api_name not in names:
            fn.api_visibility = "undocumented"


def serve_only_tools(demo: gr.Blocks) -> None:
    """Narrow the launched MCP server's table of tools (tool name -> endpoint) to the three.

    Gradio builds that table from every public endpoint when launch() creates the server; the
    API tab's endpoints take files and JSON strings, which an agent is better served by the
    typed tools for.
    """
    server = getattr(demo, "mcp_server_obj", None)
    if server is not None:
        server.tool_to_endpoint = {server.tool_prefix + tool: f"/{endpoint}"
                                   for tool, endpoint in TOOLS.items()}
