"""The API tab: how other clients call the server, and a form over /moderate, /sweep,
/category_scores and /attribution (the same endpoints gradio_client and MCP call)."""

from __future__ import annotations

import json
from collections.abc import Callable

import gradio as gr

from guard.core.prompt_guard_text import PREPROCESSING
from guard_app.api import logic, mcp
from guard_app.context import GPU, PRIVATE, PageContext
from guard_app.guarded import guarded

API_HELP = """
**Other clients.** The same server answers **`POST /v1/moderations`**, OpenAI's moderation API
(`OpenAI(base_url="__BASE__v1", api_key=...).moderations.create(input=...)`;
a conversation goes in as `extra_body={"messages": [...]}`), and is an **MCP server** at
`/gradio_api/mcp/` with three tools: `moderate`, `sweep` and `prompt_guard` (images as data
URLs). The README has an example of each.

**`/moderate`** runs both guards on a conversation and returns the same JSON as
`python -m guard classify`. The conversation is the chat-format message list; images are
uploaded files, matched to `{"type": "image", "path": "NAME"}` parts by file name (parts with
no path take the remaining uploads in order). `excluded` is a comma-separated list of codes.
An optional fifth parameter, `prompt_guard_preprocessing`, is `"none"` (the default: each
message as written, the model card's recipe) or `"llamafirewall"` (spacing tricks such as
`I g n o r e` collapsed first, as Meta's LlamaFirewall scanner does); the result says which
under `prompt_guard.preprocessing`.

```python
from gradio_client import Client, handle_file
client = Client("__BASE__")
result = client.predict(
    '[{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},'
    ' {"type": "image", "path": "red.png"}]}]',
    [handle_file("red.png")], "S2,S3", 0.5, api_name="/moderate")
print(result["verdict"], result["categories"], result["p_unsafe"])
```

**`/sweep`**, **`/category_scores`** and **`/attribution`** take the same conversation, images,
`excluded` and `threshold` (`/sweep` also `only_one`, to try each category alone) and return JSON
with a one-line `summary`:

- `/sweep`: `variants`, one per run ("all enabled", "without S1", ...; "only S1", ... with
  `only_one`), each with `verdict`, `categories`, `p_unsafe` and `flips` (the verdict differs
  from "all enabled").
- `/category_scores`: the `verdict` and, per enabled category, `probability` (that the model
  names it first, given it answers unsafe; teacher-forced, not a calibrated risk) and `share`
  (the same renormalised over the enabled categories).
- `/attribution`: a variant per prefix ending at each message ("up to message 2") and per image
  left out ("without image 4 (message 1)"); `flips` compares with the whole conversation.

```python
sweep = client.predict('[{"role": "user", "content": "..."}]', [], "", 0.5, False,
                       api_name="/sweep")
print(sweep["summary"])  # e.g. "Excluding S1 flips the verdict to safe."
```

**`/evaluate`** and **`/compare_runs`** drive the Batch evaluation tab (when the server keeps a
labels database).
"""


# The help with the page's own address, as the browser reached it (behind a proxy or on a
# Space too).
HELP_HERE = ("() => " + json.dumps(API_HELP) + ".split('__BASE__').join("
             "window.location.origin + window.location.pathname.replace(/[^/]*$/, ''))")
PLACEHOLDER = "http://127.0.0.1:7860/"  # until the page says where it is served from


def api_help(address: str | None) -> str:
    """The help with this server's address in the examples."""
    base = (address or "").strip() or PLACEHOLDER
    if not base.startswith(("http://", "https://")) or any(c in base for c in "`\"'<>\n"):
        base = PLACEHOLDER
    return API_HELP.replace("__BASE__", base if base.endswith("/") else base + "/")


class ApiTab:
    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.help = gr.Markdown(api_help(None), elem_id="gl-api-help")
        self.conversation = gr.Code(logic.EXAMPLE, language="json", label="conversation (JSON)",
                                    lines=6, interactive=True)
        self.images = gr.File(file_count="multiple", file_types=["image"],
                              label="images (matched to image parts by file name)")
        with gr.Row():
            self.excluded = gr.Textbox(label="excluded (e.g. S2,S3)", max_lines=1)
            self.threshold = gr.Number(value=ctx.threshold, label="threshold")
            self.pg_preprocessing = gr.Dropdown(list(PREPROCESSING),
                                                value=ctx.prompt_guard_preprocessing,
                                                label="prompt_guard_preprocessing")
        self.policy = gr.Textbox(label="policy (moderate: a saved policy's name such as no-s1 or "
                                       "no-s1@2, or its JSON; leave excluded and threshold "
                                       "empty)", max_lines=1)
        self.only_one = gr.Checkbox(label="only_one (sweep: also try each category alone)")
        with gr.Row():
            self.moderate = gr.Button("Moderate", variant="primary")
            self.explore = {name: gr.Button(label) for name, label in (
                ("sweep", "Sweep"), ("category_scores", "Category scores"),
                ("attribution", "Attribution"))}
        self.result = gr.JSON(label="result")

    def wire(self, demo: gr.Blocks, wire_explore: Callable[..., None]) -> None:
        """`wire_explore` is guard_app.explore.tab.wire_api (page.py hands it over)."""
        ctx = self.ctx
        # In the browser: the help with the address the page was reached at.
        demo.load(None, None, [self.help], js=HELP_HERE, **PRIVATE)
        model = {"concurrency_limit": ctx.concurrency, "concurrency_id": GPU}

        @guarded
        def on_moderate(conversation, images, excluded, threshold_value, pg_preprocessing=None,
                        policy=None):
            return logic.moderate_api(ctx.guards, conversation, images, excluded, threshold_value,
                                      default_threshold=ctx.threshold, max_images=ctx.max_images,
                                      prompt_guard_preprocessing=pg_preprocessing,
                                      policies=ctx.policies, policy=policy)

        self.moderate.click(on_moderate, [self.conversation, self.images, self.excluded,
                                          self.threshold, self.pg_preprocessing, self.policy],
                            [self.result],
                            api_name="moderate", **model)
        wire_explore(self.explore, self.conversation, self.images, self.excluded,
                             self.threshold, self.only_one, self.result,
                             lambda: logic.explore_inputs_api(ctx.guards), ctx.slot,
                             default_threshold=ctx.threshold, max_images=ctx.max_images,
                             concurrency=ctx.concurrency, concurrency_id=GPU)
        mcp.register(ctx.guards, ctx.slot, default_threshold=ctx.threshold,
                     max_images=ctx.max_images, concurrency=ctx.concurrency, concurrency_id=GPU,
                     policies=ctx.policies)
