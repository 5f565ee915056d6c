"""The Review panel (after a run) and the Labeled examples tab: gradio components over review.py."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from guard.categories import LLAMA_GUARD_4_CATEGORIES
from labels.errors import LabelsError
from labels.export import FORMATS

from . import review

NAMES = {c.code: c.card_name for c in LLAMA_GUARD_4_CATEGORIES}
PRIVATE = {"api_visibility": "private"}


def _errors_to_page(fn):
    def wrapper(*args):
        try:
            return fn(*args)
        except LabelsError as exc:
            raise gr.Error(str(exc)) from None
    wrapper.__name__ = fn.__name__
    return wrapper


def category_choices(run: dict[str, Any]) -> list[tuple[str, str]]:
    names = dict(NAMES)
    first = len(LLAMA_GUARD_4_CATEGORIES) + 1
    names.update({f"S{first + i}": c["name"] for i, c in enumerate(run.get("custom", []))})
    return [(f"{code} {names.get(code, '')}".strip(), code)
            for code in run["result"].get("enabled_categories", [])]


class ReviewPanel:
    """Mark the model right or wrong, give the correct label and categories, save."""

    def __init__(self, store: Any):
        self.store = store
        with gr.Accordion("Review this result", open=True, visible=False,
                          elem_id="gl-review") as self.box:
            gr.Markdown("Was Llama Guard right? The label is saved with the conversation, its "
                        "images, the policy and the model's answer.")
            with gr.Row():
                self.right = gr.Radio([("Right", "right"), ("Wrong", "wrong")],
                                      label="The model was")
                self.label = gr.Radio(["safe", "unsafe"], label="Correct label")
            self.categories = gr.CheckboxGroup([], label="Violated categories (when unsafe)")
            with gr.Row():
                self.reviewer = gr.Textbox(label="Reviewer", max_lines=1,
                                           placeholder="your name or handle")
                self.note = gr.Textbox(label="Note", max_lines=3)
            self.save = gr.Button("Save label", variant="secondary")
            self.status = gr.HTML()
        self.outputs = [self.box, self.right, self.label, self.categories, self.status]

    def after_run(self, run: dict[str, Any], threshold: float) -> dict:
        if "p_unsafe" not in run["result"]:
            return {self.box: gr.Accordion(visible=False)}
        return {self.box: gr.Accordion(visible=True), self.right: None, self.label: None,
                self.categories: gr.CheckboxGroup(choices=category_choices(run), value=[]),
                self.status: ""}

    def wire(self, last: gr.State, slider: gr.Slider, max_images: int) -> None:
        def prefill(run, threshold, right):
            if not run or right not in ("right", "wrong"):
                return {self.label: gr.Radio(), self.categories: gr.CheckboxGroup()}
            label, codes = review.default_label(run["result"], threshold, right == "right")
            return {self.label: label, self.categories: codes}

        @_errors_to_page
        def save(run, threshold, reviewer, right, label, categories, note):
            if not run:
                raise LabelsError("Run the guards on a conversation first, then review it.")
            saved = review.save_review(self.store, run, threshold, reviewer=reviewer,
                                       model_right=right, label=label, categories=categories,
                                       note=note, max_images=max_images)
            what = "new example" if saved.new_example else "example already stored"
            return {self.status: f'<div class="gl-note" id="gl-review-status">Saved: example '
                                 f'#{saved.example_id} ({html.escape(what)}), label '
                                 f'{html.escape(saved.label_action)}.</div>'}

        self.right.change(prefill, [last, slider, self.right], [self.label, self.categories],
                          **PRIVATE)
        self.save.click(save, [last, slider, self.reviewer, self.right, self.label,
                               self.categories, self.note], [self.status], api_name="save_label")


class LabelsBrowser:
    """List, filter and export the stored examples."""

    def __init__(self, store: Any):
        self.store = store
        gr.Markdown("Examples that reviewers labelled, newest first. Filter them, then export "
                    "for `datasets.load_dataset` (JSONL, Parquet) or for fine-tuning Llama Guard.")
        with gr.Row():
            self.label = gr.Dropdown(["any", "safe", "unsafe"], value="any", label="Gold label")
            self.category = gr.Dropdown([("any", "")] + [(f"{c} {n}", c) for c, n in NAMES.items()],
                                        value="", label="Category")
            self.disagreement = gr.Checkbox(label="Only where the model was wrong")
            self.text = gr.Textbox(label="Search text and notes", max_lines=1)
        self.refresh = gr.Button("Refresh", size="sm")
        self.table = gr.Dataframe(headers=review.LIST_HEADERS, interactive=False, wrap=True,
                                  datatype="str")
        with gr.Row():
            self.format = gr.Radio(list(FORMATS), value="jsonl", label="Export format")
            self.export = gr.Button("Export", size="sm")
            self.file = gr.File(label="Download", interactive=False)

    def wire(self) -> None:
        @_errors_to_page
        def listing(label, category, disagreement, text):
            return review.list_rows(self.store, label=label, category=category,
                                    disagreement=disagreement, text=text)

        @_errors_to_page
        def export(fmt):
            path, count = review.export_file(self.store, fmt)
            gr.Info(f"Exported {count} example{'s' if count != 1 else ''}.")
            return path

        inputs = [self.label, self.category, self.disagreement, self.text]
        self.refresh.click(listing, inputs, [self.table], api_name="list_labels")
        self.export.click(export, [self.format], [self.file], api_name="export_labels")
