"""The Tune tab (reviewers only): usable labels, a background tuning run with its progress, and
the before/after comparison on the held-out labels when it ends."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from guard_app.guarded import guarded
from guard_app.tune.logic import Tuner, TuneState
from labels.errors import LabelsError

PRIVATE = {"api_visibility": "private"}
INTRO = (
    "Tune Llama Guard on this database's labels with a LoRA adapter (Meta's recipe: learning "
    "rate 1e-4, rank 8, on the attention's q and v projections). A fifth of the labels, fixed "
    "by the seed, is held out; when tuning ends, the held-out labels are judged by the base and "
    "by the tuned model, stored as two runs (compare them in Batch evaluation), and the verdicts "
    "that changed are listed. The page keeps serving the base meanwhile; serve the adapter by "
    "starting the app with `--adapter DIR`. The same from a shell: `python -m guard.tune`.")


@dataclass
class TuneHandles:
    usable: gr.HTML
    name: gr.Textbox
    start: gr.Button
    status: gr.HTML
    comparison: gr.Code
    timer: gr.Timer
    refresh: gr.Button
    opened: Any = None  # the load listener, once wired


def _status_html(state: TuneState) -> str:
    kind = {"failed": "gl-banner gl-banner-error", "done": "gl-note"}.get(state.phase, "gl-muted")
    return f'<div class="{kind}" id="gl-tune-status">{html.escape(state.line())}</div>'


def build(tuner: Tuner | None, bar: Any, *, unavailable: str = "") -> TuneHandles:
    """The tab's components and listeners; `unavailable` says why tuning is off on this server."""
    gr.Markdown(INTRO)
    if tuner is None:
        gr.HTML(f'<div class="gl-banner gl-banner-error" id="gl-tune-off">'
                f'{html.escape(unavailable)}</div>')
    with gr.Row():
        usable = gr.HTML(elem_id="gl-tune-usable")
        refresh = gr.Button("Count again", size="sm", scale=0, interactive=tuner is not None)
    with gr.Row():
        name = gr.Textbox(label="Adapter name", max_lines=1, elem_id="gl-tune-name",
                          placeholder="empty: tuned-<date>-<time>", interactive=tuner is not None)
        start = gr.Button("Tune on these labels", variant="primary", elem_id="gl-tune-start",
                          interactive=tuner is not None)
    status = gr.HTML(_status_html(TuneState()), elem_id="gl-tune-status-box")
    comparison = gr.Code(label="Before and after, on the held-out labels", language=None,
                         interactive=False, elem_id="gl-tune-comparison")
    timer = gr.Timer(1.0, active=False)
    handles = TuneHandles(usable, name, start, status, comparison, timer, refresh)
    if tuner is not None:
        _wire(tuner, bar, handles)
    return handles


def _usable_html(tuner: Tuner) -> str:
    sentence, enough = tuner.usable()
    return f'<div class="{"gl-note" if enough else "gl-muted"}">{html.escape(sentence)}</div>'


def _wire(tuner: Tuner, bar: Any, h: TuneHandles) -> None:
    who = list(bar.inputs) if bar is not None else []

    def reviewer(action: str, session: Any, typed: Any, profile: Any) -> None:
        if bar is not None and bar.gate.restricted:
            bar.who(action, session, typed, profile)

    def show(state: TuneState) -> dict:
        return {h.status: _status_html(state), h.comparison: state.comparison,
                h.timer: gr.Timer(active=state.running)}

    def opened(session=None, typed=None, profile: gr.OAuthProfile | None = None):
        """The usable labels and the run's state, for reviewers; a sentence for the others."""
        try:
            reviewer("see the labels available for tuning", session, typed, profile)
        except LabelsError as exc:
            return {h.usable: f'<div class="gl-muted">{html.escape(str(exc))}</div>'}
        return {h.usable: _usable_html(tuner), **show(tuner.state())}

    @guarded
    def start(name, session=None, typed=None, profile: gr.OAuthProfile | None = None):
        reviewer("tune models", session, typed, profile)
        return show(tuner.start(name))

    def poll(session=None, typed=None, profile: gr.OAuthProfile | None = None):
        """/tune_status: the run's state, for reviewers only (NotAReviewer for the others)."""
        reviewer("see the tuning run", session, typed, profile)
        state = tuner.state()
        return {**show(state), h.usable: _usable_html(tuner) if not state.running else gr.skip()}

    def tick(session=None, typed=None, profile: gr.OAuthProfile | None = None):
        """The page's timer: a reviewer who signed out meanwhile stops it and reads why."""
        try:
            return poll(session, typed, profile)
        except LabelsError as exc:
            return {h.status: f'<div class="gl-muted">{html.escape(str(exc))}</div>',
                    h.comparison: "", h.timer: gr.Timer(active=False), h.usable: gr.skip()}

    outputs = [h.status, h.comparison, h.timer]
    h.start.click(start, [h.name, *who], outputs, api_name="tune_start",
                  api_visibility="undocumented")
    h.timer.tick(tick, who, [*outputs, h.usable], **PRIVATE)
    gr.Button(visible=False).click(guarded(poll), who, [*outputs, h.usable],
                                   api_name="tune_status", api_visibility="undocumented")
    h.refresh.click(opened, who, [h.usable, *outputs], **PRIVATE)
    h.opened = opened


def on_load(demo: gr.Blocks, bar: Any, h: TuneHandles) -> None:
    """Fill the usable-labels line and the run's state when the page opens."""
    if h.opened is not None:
        who = list(bar.inputs) if bar is not None else []
        demo.load(h.opened, who, [h.usable, h.status, h.comparison, h.timer], **PRIVATE)
