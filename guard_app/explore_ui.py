"""The Explore panel under the results: sweep, per-category scores, turn and image attribution.

It works on the conversation and policy of the Moderate tab (the same gr.State), and its three
actions are also endpoints that take a JSON conversation like /moderate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from guard import explore

from . import explore_view as view
from .api import build_conversation, parse_excluded, parse_threshold
from .guarded import guarded

PRIVATE = {"api_visibility": "private"}
# prepare(turns, ticked, custom) -> (engine, conversation, excluded codes, custom categories)
Prepare = Callable[[list, Any, list], tuple[Any, Any, tuple[str, ...], tuple]]


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
            with gr.Tab("Per-category scores", id="scores"):
                gr.Markdown(view.SCORES_HELP)
                self.scores = gr.Button("Score each category", variant="secondary",
                                        elem_id="gl-scores")
                self.scores_view = gr.HTML(view.empty_html("Score each category"),
                                           elem_id="gl-scores-view")
            with gr.Tab("Which turn, which image", id="attribution"):
                gr.Markdown(view.ATTRIBUTION_HELP)
                self.attribution = gr.Button("Find the turn and the image", variant="secondary",
                                             elem_id="gl-attribution")
                self.attribution_view = gr.HTML(view.empty_html("Find the turn and the image"),
                                                elem_id="gl-attribution-view")
        self.views = [self.sweep_view, self.scores_view, self.attribution_view]

    def cleared(self) -> dict:
        """Empty views, for when the conversation changes under them."""
        return {self.sweep_view: view.empty_html("Sweep categories"),
                self.scores_view: view.empty_html("Score each category"),
                self.attribution_view: view.empty_html("Find the turn and the image")}

    def wire(self, turns: gr.State, categories: gr.CheckboxGroup, custom: gr.State,
             slider: gr.Slider, prepare: Prepare, gpu: dict[str, Callable], *,
             concurrency: int, concurrency_id: str) -> None:
        """Page buttons over the Moderate tab's state; `gpu` holds the wrapped engine calls."""
        model = {"concurrency_limit": concurrency, "concurrency_id": concurrency_id}

        @guarded
        def on_sweep(turn_list, ticked, custom_list, threshold, only_one):
            guard, conversation, excluded, cats = prepare(turn_list, ticked, custom_list)
            data = view.sweep_json(guard, conversation, excluded, threshold=threshold,
                                   only_one=bool(only_one), custom=cats, run=gpu["sweep"])
            return {self.sweep_view: view.sweep_html(data)}

        @guarded
        def on_scores(turn_list, ticked, custom_list, threshold):
            guard, conversation, excluded, cats = prepare(turn_list, ticked, custom_list)
            data = view.scores_json(guard, conversation, excluded, threshold=threshold,
                                    custom=cats, run=gpu["scores"])
            return {self.scores_view: view.scores_html(data)}

        @guarded
        def on_attribution(turn_list, ticked, custom_list, threshold):
            guard, conversation, excluded, cats = prepare(turn_list, ticked, custom_list)
            data = view.attribution_json(guard, conversation, excluded, threshold=threshold,
                                         custom=cats, run=gpu["attribution"])
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
             engine: Callable[[], Any], gpu: dict[str, Callable], *, default_threshold: float,
             max_images: int, concurrency: int, concurrency_id: str) -> None:
    """/sweep, /category_scores and /attribution: a JSON conversation in, JSON out."""
    model = {"concurrency_limit": concurrency, "concurrency_id": concurrency_id}

    def parsed(conversation_value, files, excluded_value, threshold_value):
        return (engine(), build_conversation(conversation_value, files, max_images=max_images),
                parse_excluded(excluded_value), parse_threshold(threshold_value, default_threshold))

    @guarded
    def sweep(conversation_value, files, excluded_value, threshold_value, only_one_value):
        guard, built, codes, cut = parsed(conversation_value, files, excluded_value,
                                          threshold_value)
        return view.sweep_json(guard, built, codes, threshold=cut, only_one=bool(only_one_value),
                               run=gpu["sweep"])

    @guarded
    def category_scores(conversation_value, files, excluded_value, threshold_value):
        guard, built, codes, cut = parsed(conversation_value, files, excluded_value,
                                          threshold_value)
        return view.scores_json(guard, built, codes, threshold=cut, run=gpu["scores"])

    @guarded
    def attribution(conversation_value, files, excluded_value, threshold_value):
        guard, built, codes, cut = parsed(conversation_value, files, excluded_value,
                                          threshold_value)
        return view.attribution_json(guard, built, codes, threshold=cut, run=gpu["attribution"])

    common = [conversation, images, excluded, threshold]
    buttons["sweep"].click(sweep, [*common, only_one], [result], api_name="sweep", **model)
    buttons["category_scores"].click(category_scores, common, [result],
                                     api_name="category_scores", **model)
    buttons["attribution"].click(attribution, common, [result], api_name="attribution", **model)


def gpu_calls(on_gpu: Callable[[Callable], Callable]) -> dict[str, Callable]:
    """The engine calls of this panel, each wrapped once (spaces.GPU on ZeroGPU)."""
    return {"sweep": on_gpu(explore.sweep), "scores": on_gpu(view.verdict_and_scores),
            "attribution": on_gpu(explore.attribution)}
