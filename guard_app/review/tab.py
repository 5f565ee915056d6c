"""The Review panel under the Moderate tab's results: was the model right, the label, save."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from guard.core.categories import Family, choices
from guard_app.guarded import guarded, in_place  # escaped messages: toasts render HTML
from guard_app.moderate.logic import PageRun
from guard_app.review import logic as review
from guard_app.review.queue_api import QueueApi
from guard_app.signin import ReviewerBar
from labels import queues
from labels.errors import InvalidLabel

PRIVATE = {"api_visibility": "private"}


def category_choices(run: PageRun) -> list[tuple[str, str]]:
    """The codes the run's prompt offered, named as the run's family names them."""
    result = run.result
    offered = dict((code, label) for label, code in choices(
        result.get("family") or Family.LLAMA_GUARD_4, [c["name"] for c in run.custom]))
    return [(offered.get(code, code), code) for code in result.get("enabled_categories", [])]


class ReviewPanel:
    """Mark the model right or wrong, give the correct label and categories, save."""

    def __init__(self, store: Any, bar: ReviewerBar):
        self.store = store
        self.bar = bar
        with gr.Accordion("Review this result", open=True, visible=False,
                          elem_id="gl-review") as self.box:
            gr.Markdown("Was Llama Guard right? The label is saved with the conversation, its "
                        "images, the policy and the model's answer, under the reviewer named at "
                        "the top of the page.")
            with gr.Row():
                self.right = gr.Radio([("Right", "right"), ("Wrong", "wrong")],
                                      label="The model was", elem_id="gl-review-right")
                self.label = gr.Radio(["safe", "unsafe"], label="Correct label",
                                      elem_id="gl-review-label")
            self.categories = gr.CheckboxGroup([], label="Violated categories (when unsafe)",
                                               elem_id="gl-review-categories")
            self.note = gr.Textbox(label="Note", max_lines=3)
            self.save = gr.Button("Save label", variant="secondary", elem_id="gl-save-label")
            self.status = gr.HTML()
        self.outputs = [self.box, self.right, self.label, self.categories, self.status]

    def after_run(self, run: PageRun, threshold: float) -> dict:
        if not run.judged:
            return {self.box: gr.Accordion(visible=False)}
        return {self.box: gr.Accordion(visible=True), self.right: None, self.label: None,
                self.categories: gr.CheckboxGroup(choices=category_choices(run), value=[]),
                self.status: ""}

    def wire(self, last: gr.State, slider: gr.Slider, max_images: int) -> None:
        def prefill(run, threshold, right):
            if not run or right not in ("right", "wrong"):
                return {self.label: gr.Radio(), self.categories: gr.CheckboxGroup()}
            label, codes = review.default_label(run.result, threshold, right == "right")
            return {self.label: label, self.categories: codes}

        @guarded
        def save(session, typed, run, threshold, right, label, categories, note,
                 profile: gr.OAuthProfile | None = None):
            reviewer = self.bar.who("save labels", session, typed, profile, need_name=True)
            if not run:
                raise InvalidLabel("Run the guards on a conversation first, then review it.")
            saved = review.save_review(self.store, run, threshold, reviewer=reviewer,
                                       model_right=right, label=label, categories=categories,
                                       note=note, max_images=max_images)
            what = "new example" if saved.new_example else "example already stored"
            return {self.status: f'<div class="gl-note" id="gl-review-status">Saved: example '
                                 f'#{saved.example_id} ({html.escape(what)}), label '
                                 f'{html.escape(saved.label_action)} by '
                                 f'{html.escape(reviewer)}.</div>'}

        self.right.change(prefill, [last, slider, self.right], [self.label, self.categories],
                          **PRIVATE)
        self.save.click(save, [*self.bar.inputs, last, slider, self.right, self.label,
                               self.categories, self.note], [self.status], api_name="save_label")


QUEUE_KEYS = ("**Keys:** Ctrl+Enter submit and open the next item · Alt+K skip · Alt+U unsafe · "
              "Alt+F safe (clears the categories) · Alt+1 … Alt+9 toggle S1-S9, Alt+0 S10, "
              "Alt+Shift+1 … Alt+Shift+4 S11-S14 (custom ones after).")


class QueuePanel:
    """Work a review queue: the next item with the model's stored answer, label, submit, next.

    Blind: an item never shows another reviewer's label. `opened` carries the item (as a plain
    dict) so the Moderate tab loads its conversation, to re-run the guards on demand.
    """

    def __init__(self, store: Any, bar: ReviewerBar):
        self.store, self.bar = store, bar
        self.item = gr.State(None)
        self.opened = gr.State(None)
        with gr.Accordion("Review queue", open=True, elem_id="gl-queue"):
            with gr.Row():
                self.queue = gr.Dropdown(review.queue_choices(store), label="Queue",
                                         allow_custom_value=True, elem_id="gl-queue-name",
                                         scale=2)
                self.start = gr.Button("Start / next item", size="sm", elem_id="gl-queue-start",
                                       scale=0)
                self.progress = gr.HTML(elem_id="gl-queue-progress")
            with gr.Row(visible=False, equal_height=False) as self.work:
                with gr.Column(scale=3):
                    self.answer = gr.HTML(elem_id="gl-queue-answer")
                    self.conversation = gr.HTML()
                with gr.Column(scale=2):
                    self.label = gr.Radio(["safe", "unsafe"], label="Correct label",
                                          elem_id="gl-queue-label")
                    self.categories = gr.CheckboxGroup([], label="Violated categories",
                                                       elem_id="gl-queue-categories")
                    self.note = gr.Textbox(label="Note", max_lines=2, elem_id="gl-queue-note")
                    with gr.Row():
                        self.submit = gr.Button("Submit and next", variant="primary",
                                                elem_id="gl-queue-submit")
                        self.skip = gr.Button("Skip", size="sm", elem_id="gl-queue-skip")
            gr.Markdown(QUEUE_KEYS, elem_id="gl-queue-keys")
            self.status = gr.HTML(elem_id="gl-queue-status")
        self.shown = [self.item, self.opened, self.work, self.answer, self.conversation,
                      self.label, self.categories, self.note, self.progress, self.status]

    def _show(self, queue: str, who: str, item: Any, status: str = "") -> dict:
        progress = queues.progress(self.store, queue, who).sentence
        if item is None:
            return {self.item: None, self.work: gr.Row(visible=False),
                    self.progress: html.escape(progress),
                    self.status: f'<div class="gl-note">{html.escape(status)} Nothing left for '
                                 f'you in {html.escape(queue)}.</div>'}
        data = item.to_json()
        named = dict((code, label) for label, code in choices(data["family"]))
        return {self.item: data, self.opened: data, self.work: gr.Row(visible=True),
                self.answer: review.stored_answer_html(data),
                self.conversation: review.queue_item_html(data), self.label: None,
                self.categories: gr.CheckboxGroup(
                    choices=[(named.get(c, c), c) for c in data["codes"]], value=[]),
                self.note: "", self.progress: html.escape(progress),
                self.status: f'<div class="gl-note">{html.escape(status)}</div>' if status
                else ""}

    def wire(self, demo: gr.Blocks) -> None:
        who_in, bar = self.bar.inputs, self.bar

        def who(action, session, typed, profile):
            return bar.who(action, session, typed, profile, need_name=True)

        def start(session, typed, queue, profile: gr.OAuthProfile | None = None):
            reviewer = who("review queues", session, typed, profile)
            return self._show(queue, reviewer, queues.next_item(self.store, queue, reviewer))

        def submit(session, typed, queue, item, label, categories, note,
                   profile: gr.OAuthProfile | None = None):
            reviewer = who("label queue items", session, typed, profile)
            if not item:
                raise InvalidLabel("Open an item first: pick a queue and press Start.")
            if label not in ("safe", "unsafe"):
                raise InvalidLabel("Pick the correct label first: safe or unsafe.")
            done = queues.submit(self.store, queue, item["id"], reviewer, label,
                                 categories or (), note or "")
            return self._show(queue, reviewer, queues.next_item(self.store, queue, reviewer),
                              f"Saved as example #{done.example_id}.")

        def skip(session, typed, queue, item, profile: gr.OAuthProfile | None = None):
            reviewer = who("skip queue items", session, typed, profile)
            if not item:
                raise InvalidLabel("Open an item first: pick a queue and press Start.")
            queues.skip(self.store, queue, item["id"], reviewer)
            return self._show(queue, reviewer, queues.next_item(self.store, queue, reviewer),
                              f"Skipped item {item['position'] + 1}.")

        page = [*who_in, self.queue]
        quiet = {**PRIVATE, "show_progress": "hidden"}  # no overlay flashing between items
        self.start.click(in_place(start, self.shown), page, self.shown, **quiet)
        self.submit.click(in_place(submit, self.shown),
                          [*page, self.item, self.label, self.categories, self.note], self.shown,
                          **quiet)
        self.skip.click(in_place(skip, self.shown), [*page, self.item], self.shown, **quiet)
        # Picking "safe" clears the categories; "unsafe" leaves them alone (no stale value
        # written back over a box ticked meanwhile).
        self.label.change(lambda label: [] if label == "safe" else gr.skip(), [self.label],
                          [self.categories], show_progress="hidden", queue=False, **PRIVATE)
        demo.load(lambda: gr.Dropdown(choices=review.queue_choices(self.store)), None,
                  [self.queue], **PRIVATE)
        QueueApi(self.store, bar).wire()
