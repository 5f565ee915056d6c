"""The Explore panel under the results: sweep, per-category scores, turn and image attribution.

It works on the conversation and policy of the Moderate tab (the same gr.State), and its three
actions are also endpoints that take a JSON conversation like /moderate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from guard_app import gpu
from guard_app.explore import logic as view
from guard_app.guarded import guarded
from guard_app.parsers import build_conversation, parse_excluded, parse_threshold

PRIVATE = {"api_visibility": "private"}
# prepare(turns, ticked, custom) -> (engine, conversation, excluded codes, custom categories)
Prepare = Callable[[list, Any, list], tuple[Any, Any, tuple[str, ...], tuple]]


def explore_call(action: str, slot: int, guard: Any, conversation: Any, excluded: Any,
                 threshold: float, custom: Any = (), only_one: bool = False) -> dict[str, Any]:
    """One of the three actions as one GPU call over plain data."""
    args = (slot, gpu.plain(conversation), list(excluded), float(threshold))
    if action == "sweep":
        return gpu.sweep(*args, only_one=bool(only_one), custom=gpu.plain_custom(custom))
    if action == "scores":
        view.require_logits(guard)
        return gpu.category_scores(*args, custom=gpu.plain_custom(custom))
    return gpu.attribution(*args, custom=gpu.plain_custom(custom))


def _action(title: str, key: str, help_text: str, button: str) -> tuple[gr.Button, gr.HTML]:
    """A sub-tab of one button and the HTML view it fills."""
    with gr.Tab(title, id=key):
        gr.Markdown(help_text)
        clicked = gr.Button(button, variant="secondary", elem_id=f"gl-{key}")
        shown = gr.HTML(view.empty_html(button), elem_id=f"gl-{key}-view")
    return clicked, shown


class ExplorePanel:
    """Three sub-tabs, each with one button and one HTML view."""

    def __init__(self) -> None:
        gr.Markdown("### Explore: what the toggles do")
        with gr.Tabs():
            with gr.Tab("Sweep categories", id="sweep"):
                gr.Markdown(view.SWEEP_HELP)
                with gr.Row():
                    self.only_one = gr.Checkbox(label="also try each category alone",
                                                elem_id="gl-only-one")
                    self.sweep = gr.Button("Sweep categories", variant="secondary",
                                           elem_id="gl-sweep")
                self.sweep_view = gr.HTML(view.empty_html("Sweep categories"),
                                          elem_id="gl-sweep-view")
            self.scores, self.scores_view = _action("Per-category scores", "scores",
                                                    view.SCORES_HELP, "Score each category")
            self.attribution, self.attribution_view = _action(
                "Which turn, which image", "attribution", view.ATTRIBUTION_HELP,
                "Find the turn and the image")
        self.views = [self.sweep_view, self.scores_view, self.attribution_view]

    def cleared(self) -> dict:
        """Empty views, for when the conversation changes under them."""
        return {self.sweep_view: view.empty_html("Sweep categories"),
                self.scores_view: view.empty_html("Score each category"),
                self.attribution_view: view.empty_html("Find the turn and the image")}

    def wire(self, turns: gr.State, categories: gr.CheckboxGroup, custom: gr.State,
             slider: gr.Slider, prepare: Prepare, slot: int, *, concurrency: int,
             concurrency_id: str) -> None:
        """Page buttons over the Moderate tab's state; `slot` names the models (guard_app.gpu)."""
        model = {"concurrency_limit": concurrency, "concurrency_id": concurrency_id}

        def run(action, turn_list, ticked, custom_list, threshold, only_one=False):
            guard, conversation, excluded, cats = prepare(turn_list, ticked, custom_list)
            return explore_call(action, slot, guard, conversation, excluded, threshold, cats,
                                only_one)

        @guarded
        def on_sweep(turn_list, ticked, custom_list, threshold, only_one):
            data = run("sweep", turn_list, ticked, custom_list, threshold, only_one)
            return {self.sweep_view: view.sweep_html(data)}

        @guarded
        def on_scores(turn_list, ticked, custom_list, threshold):
            data = run("scores", turn_list, ticked, custom_list, threshold)
            return {self.scores_view: view.scores_html(data)}

        @guarded
        def on_attribution(turn_list, ticked, custom_list, threshold):
            data = run("attribution", turn_list, ticked, custom_list, threshold)
            return {self.attribution_view: view.attribution_html(data)}

        policy = [turns, categories, custom, slider]
        self.sweep.click(on_sweep, [*policy, self.only_one], [self.sweep_view], **PRIVATE,
                         **model)
        self.scores.click(on_scores, policy, [self.scores_view], **PRIVATE, **model)
        self.attribution.click(on_attribution, policy, [self.attribution_view], **PRIVATE,
                               **model)
        turns.change(self.cleared, None, self.views, **PRIVATE)


def wire_api(buttons: dict[str, gr.Button], conversation: gr.Code, images: gr.File,
             excluded: gr.Textbox, threshold: gr.Number, only_one: gr.Checkbox, result: gr.JSON,
             engine: Callable[[], Any], slot: int, *, default_threshold: float,
             max_images: int, concurrency: int, concurrency_id: str) -> None:
    """/sweep, /category_scores and /attribution: a JSON conversation in, JSON out (the API
    tab's form; page.py hands its components over)."""
    model = {"concurrency_limit": concurrency, "concurrency_id": concurrency_id}

    def run(action, conversation_value, files, excluded_value, threshold_value, only_one=False):
        guard = engine()
        built = build_conversation(conversation_value, files, max_images=max_images)
        return explore_call(action, slot, guard, built, parse_excluded(excluded_value),
                            parse_threshold(threshold_value, default_threshold),
                            only_one=only_one)

    @guarded
    def sweep(conversation_value, files, excluded_value, threshold_value, only_one_value):
        return run("sweep", conversation_value, files, excluded_value, threshold_value,
                   only_one_value)

    @guarded
    def category_scores(conversation_value, files, excluded_value, threshold_value):
        return run("scores", conversation_value, files, excluded_value, threshold_value)

    @guarded
    def attribution(conversation_value, files, excluded_value, threshold_value):
        return run("attribution", conversation_value, files, excluded_value, threshold_value)

    common = [conversation, images, excluded, threshold]
    buttons["sweep"].click(sweep, [*common, only_one], [result], api_name="sweep", **model)
    buttons["category_scores"].click(category_scores, common, [result],
                                     api_name="category_scores", **model)
    buttons["attribution"].click(attribution, common, [result], api_name="attribution", **model)
