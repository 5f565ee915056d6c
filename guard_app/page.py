"""The page: the banner, then one tab per feature folder, then the queue and the extra routes."""

from __future__ import annotations

import contextlib
import functools
import html
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr

from guard.core.categories import Family
from guard.core.conversation import MAX_IMAGES
from guard.core.prompt_guard_text import check_preprocessing
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.service import Guards
from guard_app import fair, gpu, kept_session, uploads
from guard_app.api import mcp, moderations
from guard_app.api.tab import ApiTab
from guard_app.config import Serving
from guard_app.context import EVAL, GPU, PageContext
from guard_app.evaluate import logic as eval_logic
from guard_app.evaluate import sweep as eval_sweep
from guard_app.explore import tab as explore_tab
from guard_app.explore.tab import ExplorePanel
from guard_app.models import PROMPT_GUARD, PromptGuardChoices
from guard_app.moderate import logic, results
from guard_app.moderate.examples import write_swatches
from guard_app.moderate.tab import ModerateTab
from guard_app.policies import PolicyBook
from guard_app.review.tab import QueuePanel, ReviewPanel
from guard_app.reviewers import Mode
from guard_app.run import engine_line, model_name  # noqa: F401 (engine_line: named here as before)
from guard_app.style import CSS, head
from guard_app.tune import tab as tune_tab

DECODE = "decode"  # the concurrency group of events that decode an uploaded image
# outside a model run (runs decode in theirs)
DECODES = frozenset({"attach_image", "attach_image_on_page"})


def build_demo(guards: Guards, *, prompt_guards: PromptGuardChoices | None = None,
               default_prompt_guard: str | None = None, store: Any = None, tiny: bool = False,
               failures: dict[str, str] | None = None, threshold: float = DEFAULT_THRESHOLD,
               max_images: int = MAX_IMAGES, concurrency: int = 1,
               swatch_dir: str | None = None, data_dir: str | Path | None = None,
               reviewers: Any = None, serving: Serving | None = None,
               api_key: str | None = None, prompt_guard_preprocessing: str = "none",
               tuner: Any = None, tune_off: str = "", reviewers_off: str = "",
               default_policy: Any = None, notices: tuple[str, ...] = ()) -> gr.Blocks:
    """The whole page over already loaded models (and optionally a `labels.Store`).

    `prompt_guard_preprocessing` is how Prompt Guard reads messages unless a visitor changes
    it: "none" (the model card) or "llamafirewall" (guard.core.prompt_guard_text).
    `api_key`, when given, is the bearer key /v1/moderations asks for (GUARD_LAB_API_KEY).
    `data_dir` holds the public evaluation sets; None looks in the default place. `serving`
    holds the limits of a public server (queue, per visitor, state lifetime, upload size).
    `tuner` runs the Tune tab (guard_app.tune.logic.tuner_for); `tune_off` says why it is off.
    `reviewers_off` says why reviewing is off and how to turn it on (a banner; config.py).
    `default_policy` (a guard.core.policy.Policy) is enforced wherever no policy is named.
    `notices` are warnings for everyone, each a banner (labels that vanish at restart).
    """
    if prompt_guards is None and guards.prompt_guard is not None:
        prompt_guards = PromptGuardChoices.fixed(guards.prompt_guard, tiny=tiny)
    if prompt_guards is not None and default_prompt_guard not in prompt_guards.sources:
        default_prompt_guard = next(iter(prompt_guards.sources))
    serving = serving or Serving()
    ctx = PageContext(
        guards=guards, prompt_guards=prompt_guards, default_prompt_guard=default_prompt_guard,
        store=store, tiny=tiny, threshold=threshold, max_images=max_images,
        concurrency=concurrency, slot=gpu.register(guards, prompt_guards),
        ttl=serving.state_ttl_s,
        swatches=write_swatches(swatch_dir or tempfile.mkdtemp(prefix="guard-lab-swatches-")),
        prompt_guard_preprocessing=check_preprocessing(prompt_guard_preprocessing))
    ctx = replace(ctx, policies=PolicyBook(store, ctx.family, default_policy, threshold))
    # Uploads (and the files the app writes into Gradio's cache) go when the state that holds
    # them may have expired; checked every ten minutes.
    with gr.Blocks(title="Guard Lab", delete_cache=(600, ctx.ttl)) as demo:
        _header(ctx, dict(failures or {}), reviewers_off, notices)
        if store is not None:  # the bar sits under the banner, above the tabs
            ctx = replace(ctx, bar=_reviewer_bar(reviewers))
            ctx.bar.visitor = lambda request: fair.visitor(request, trust_proxy=serving.hops)
        # Two faces: a visitor composes, runs and reads; a reviewer (everyone without
        # accounts) also gets the queue, the review form and the reviewers' tabs.
        everyone = ctx.bar is None or ctx.bar.gate.mode is Mode.OPEN
        with gr.Tabs() as tabs:
            with gr.Tab("Moderate", id="moderate"):
                room = _moderate_room(ctx, demo, everyone)
            with gr.Tab("Labeled examples", id="labels", visible=everyone) as labels_tab:
                browser = _labels_tab(ctx)
            with gr.Tab("Batch evaluation", id="evaluate", visible=everyone) as eval_tab:
                evaluation = _eval_tab(ctx, data_dir)
            with gr.Tab("Tune", id="tune", visible=store is not None and everyone) as tune_box:
                tune = _tune_tab(tuner, tune_off, ctx.bar) if store is not None else None
            with gr.Tab("API", id="api"):
                api = ApiTab(ctx)
        _wire(demo, ctx, room, browser, evaluation, tune, api)
        if ctx.bar is not None:
            ctx.bar.show_to_reviewers(demo, [*room.reviewer_parts, labels_tab, eval_tab,
                                             tune_box])
        opened = getattr(evaluation, "opened", None)
        if opened is not None:  # a run's row opens in the Moderate tab
            room.moderate.listen_for_stored(opened)
            opened.change(lambda row: gr.Tabs(selected="moderate") if row else gr.skip(),
                          [opened], [tabs], api_visibility="private")
    return _serve(demo, ctx, serving, api_key)


@dataclass
class ModerateRoom:
    """The Moderate tab as page.py composes it from the folders' panels."""

    moderate: ModerateTab
    explore: ExplorePanel
    queue: Any = None  # guard_app.review.tab.QueuePanel when labelling is on
    review: Any = None  # guard_app.review.tab.ReviewPanel when labelling is on
    reviewer_parts: list = field(default_factory=list)  # shown to reviewers only


def _moderate_room(ctx: PageContext, demo: gr.Blocks, everyone: bool) -> ModerateRoom:
    """The queue (reviewers), the composer beside the verdict with the review form under it
    (reviewers), the policy, then Explore."""
    parts, queue, review = [], None, {}
    if ctx.store is not None:
        with gr.Column(visible=everyone) as queue_box:
            queue = QueuePanel(ctx.store, ctx.bar)
        parts.append(queue_box)

    def under_verdict():
        if ctx.store is None:
            return None
        with gr.Column(visible=everyone) as review_box:
            review["panel"] = ReviewPanel(ctx.store, ctx.bar)
        parts.append(review_box)
        return review["panel"]

    moderate = ModerateTab(ctx, demo, under_verdict=under_verdict)
    if ctx.store is not None:
        parts.append(moderate.save_policy_box)
    explore = ExplorePanel()
    info = ctx.info
    if info is not None and not info.capabilities.category_scores:
        gr.Markdown(f"*Per-category scores need the model's logits (the transformers "
                    f"engine); this server runs {info.engine}. Sweep and attribution work "
                    f"on any engine.*")
    return ModerateRoom(moderate, explore, queue, review.get("panel"), parts)


def _header(ctx: PageContext, failures: dict[str, str], reviewers_off: str = "",
            notices: tuple[str, ...] = ()) -> None:
    family = ctx.family
    loaded = {}
    if ctx.info is not None:
        loaded["Llama Guard"] = engine_line(ctx.info)
    if ctx.guards.prompt_guard is not None:
        loaded[PROMPT_GUARD] = model_name(ctx.guards.prompt_guard.name)
    gr.Markdown(f"# Guard Lab\nCheck a conversation with Meta's **{family.label}** "
                "(harmful content) and **Prompt Guard 2** (jailbreaks and prompt injection).",
                elem_id="gl-title")
    gr.HTML(results.banner_html(ctx.tiny, failures, loaded, family), elem_id="gl-banner")
    if reviewers_off:
        gr.HTML(f'<div class="gl-banner gl-banner-error">{html.escape(reviewers_off)}</div>',
                elem_id="gl-reviewers-off")
    for n, notice in enumerate(notices):
        gr.HTML(f'<div class="gl-banner gl-banner-error">{html.escape(notice)}</div>',
                elem_id=f"gl-notice-{n}")


def _wire(demo: gr.Blocks, ctx: PageContext, room: ModerateRoom, browser: Any,
          evaluation: Any, tune: Any, api: ApiTab) -> None:
    moderate = room.moderate
    if room.review is not None:  # the review form follows each run (before the run is wired)
        moderate.on_ran(room.review.after_run, room.review.outputs)
    moderate.wire()
    room.explore.wire(moderate.turns, moderate.categories, moderate.custom, moderate.slider,
                      functools.partial(logic.explore_inputs, ctx.guards,
                                        max_images=ctx.max_images),
                      ctx.slot, concurrency=ctx.concurrency, concurrency_id=GPU)
    if room.review is not None:
        room.review.wire(moderate.last, moderate.slider, ctx.max_images, moderate.page_now)
    if room.queue is not None:
        room.queue.wire(demo)
        moderate.listen_for_stored(room.queue.opened)
    if browser is not None:
        ctx.bar.wire()
        kept_session.wire(demo, ctx.bar)  # the sign-in survives a reload
        browser.wire()
    if tune is not None:
        tune_tab.on_load(demo, ctx.bar, tune)
    if evaluation is not None:
        evaluation.wire(demo, ctx.guards, moderate.categories,
                        lambda ticked: logic.excluded_codes(ticked, ctx.family),
                        concurrency=1, concurrency_id=EVAL,
                        judge_batch=eval_logic.gpu_judge(ctx.slot),
                        variant_judge=eval_sweep.gpu_judge(ctx.slot))
    api.wire(demo, explore_tab.wire_api)
    mcp.publish_only(demo)  # the page's plumbing leaves the API page and MCP


def _serve(demo: gr.Blocks, ctx: PageContext, serving: Serving, api_key: str | None
           ) -> gr.Blocks:
    """The queue with its limits, the fair share per visitor, and /v1/moderations."""
    demo.queue(default_concurrency_limit=None, max_size=serving.queue_size)
    for fn in demo.fns.values():  # decoding an upload: a few at once, on the visitor's share
        if fn.api_name in DECODES:
            fn.concurrency_id, fn.concurrency_limit = DECODE, serving.decode_concurrency
    share = fair.install(demo, groups=(GPU, EVAL, DECODE), per_visitor=serving.per_visitor,
                         trust_proxy=serving.hops,
                         sessions_per_visitor=serving.sessions_per_visitor,
                         session_ttl=serving.state_ttl_s)
    if serving.max_file_size is None:
        serving = replace(serving, max_file_size=uploads.largest_file(labels=ctx.store is not None))
    demo.guard_lab_serving = serving  # launch() reads the upload limits from here
    demo.guard_lab_moderations = moderations.Moderations(  # launch() installs its route
        ctx.guards, ctx.slot, share, family=ctx.family, threshold=ctx.threshold,
        max_images=ctx.max_images, concurrency=ctx.concurrency,
        queue_size=serving.queue_size, api_key=api_key,
        decode_concurrency=serving.decode_concurrency, policies=ctx.policies)
    return demo


def _reviewer_bar(gate: Any):
    """`gate` is a guard_app.reviewers.ReviewerGate; None: no accounts, everyone reviews."""
    from guard_app.reviewers import ReviewerGate
    from guard_app.signin import ReviewerBar

    return ReviewerBar(gate if gate is not None else ReviewerGate())


def _eval_tab(ctx: PageContext, data_dir: str | Path | None):
    from guard.core.categories import choices
    from guard_app.evaluate.tab import EvalTab

    if ctx.store is None:
        gr.Markdown("Batch evaluation stores its runs in the labels database, which is off on "
                    "this server. Start the app with `--db PATH` (or set `GUARD_LAB_DB`).")
        return None
    builtins = eval_logic.builtin_sets(data_dir if data_dir is not None
                                       else eval_logic.default_data_dir())
    return EvalTab(ctx.store, builtins=builtins, category_choices=choices(ctx.family),
                   codes=ctx.codes, threshold=ctx.threshold, family=ctx.family, bar=ctx.bar,
                   policies=ctx.policies)


def _tune_tab(tuner: Any, tune_off: str, bar: Any):
    from guard_app.tune import tab

    return tab.build(tuner, bar, unavailable=tune_off or "Tuning is off on this server.")


def _labels_tab(ctx: PageContext):
    from guard_app.labeled.tab import LabelsBrowser

    if ctx.store is None:
        gr.Markdown("Labelling is off on this server. Start the app with `--db PATH` (or set "
                    "`GUARD_LAB_DB`) to save reviewed examples, then browse and export them here.")
        return None
    return LabelsBrowser(ctx.store, ctx.bar, ctx.family)


LOCALHOST_CHECK_S = 180.0  # how long launch() waits for its own server to answer


@contextlib.contextmanager
def patient_localhost_check(ceiling_s: float = LOCALHOST_CHECK_S):
    """Let Gradio's launch() wait for its own server to answer, up to `ceiling_s`.

    launch() asks the page's local address once the server has started (networking.url_ok):
    five HEAD requests of 3 s, but the first timeout gives up at once with "When localhost is
    not accessible, a shareable link must be created". On a loaded machine (a busy Space, a CI
    runner beside other jobs) the first answer can take longer. This asks the same question
    again until the server answers, a connection is refused (nothing is there) or the ceiling
    passes: it waits on the answer, not on a time.
    """
    import httpx
    from gradio import networking

    original = networking.url_ok

    def url_ok(url: str) -> bool:
        deadline = time.monotonic() + ceiling_s
        while True:
            try:
                answer = httpx.head(url, timeout=30, verify=False)
            except httpx.TimeoutException:
                if time.monotonic() > deadline:
                    return False
                continue
            except (ConnectionError, httpx.ConnectError):
                return original(url)  # nothing answering: Gradio's own verdict and message
            if answer.status_code in (200, 401, 301, 302, 303, 307, 308):
                return True
            return original(url)

    networking.url_ok = url_ok
    try:
        yield
    finally:
        networking.url_ok = original


def launch(demo: gr.Blocks, *, family: Family | str = Family.LLAMA_GUARD_4,
           on_ready: Callable[[], None] | None = None, **kwargs: Any):
    """Start the server with the page's style (Gradio 6 takes css, head and theme here), its
    MCP server (/gradio_api/mcp/) and POST /v1/moderations on the same FastAPI app.

    `family` is the loaded Llama Guard's: the category tooltips come from its table.
    """
    serving = getattr(demo, "guard_lab_serving", None) or Serving()
    kwargs.setdefault("max_file_size", serving.max_file_size or uploads.largest_file())
    kwargs.setdefault("mcp_server", True)
    hold = not kwargs.pop("prevent_thread_lock", False)
    # Gradio creates its FastAPI app inside launch(): start without blocking, add the route,
    # then block as launch() itself would have.
    with warnings.catch_warnings():
        # About State inputs of endpoints it would serve as MCP tools: only the three typed
        # tools stay (serve_only_tools, below), and they have none.
        warnings.filterwarnings("ignore", "This MCP server includes a tool that has a gr.State")
        with patient_localhost_check():
            started = demo.launch(css=CSS, head=head(family), theme=gr.themes.Soft(),
                                  footer_links=["api"], prevent_thread_lock=True, **kwargs)
    mcp.serve_only_tools(demo)
    served_moderations = getattr(demo, "guard_lab_moderations", None)
    served = getattr(demo, "server_app", None)  # the FastAPI app launch() serves
    if served_moderations is not None and served is not None:
        served_moderations.install_routes(served)
    if served is not None:  # the per-visitor upload quota, and uploads nobody holds swept
        demo.guard_lab_uploads = uploads.install(
            demo, served, quota=serving.upload_quota, ttl_s=serving.upload_ttl_s,
            visitor=lambda request: fair.visitor(request, trust_proxy=serving.hops))
    if on_ready is not None:
        on_ready()
    if hold:
        demo.block_thread()
    return started
