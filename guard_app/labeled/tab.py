"""The Labeled examples tab: filter, open, edit, delete, export, agreement and metrics.

Refusals on the page (a safe label with categories, a deletion without a reason, nothing open,
the end of the page) are toasts that leave every output as it was (`in_place`); the named
endpoints still raise them for API clients (`on_page_and_api`).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
import pandas as pd

from guard.core.categories import Family, choices
from guard_app.exports import Downloads
from guard_app.guarded import guarded, in_place, on_page_and_api  # escaped: toasts render HTML
from guard_app.labeled import logic as view
from guard_app.labeled import prompt_guard_measure as pg_measure
from guard_app.reviewers import duration
from guard_app.signin import SHORTCUTS, ReviewerBar
from labels.errors import LabelsError
from labels.export import FORMATS

PRIVATE = {"api_visibility": "private"}
LIST_POLL_S = 15  # how often an open list looks for new examples (each look costs a query)
# Shares of the table's width (the columns of view.LIST_HEADERS), so that the list fits a
# 1366 px screen without scrolling sideways; long values wrap within their column.
LIST_WIDTHS = ["6.5%", "7%", "8%", "8%", "7%", "8.5%", "4%", "8.5%", "26%", "6%", "10.5%"]


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _api_only(fn: Callable, inputs: Sequence[Any], outputs: Sequence[Any], api_name: str) -> None:
    """A named endpoint for API clients alone (refusals raised), on a hidden button."""
    gr.Button(visible=False, render=True).click(guarded(fn), list(inputs), list(outputs),
                                                api_name=api_name)


def _row(evt: gr.SelectData) -> int | None:
    return evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index


class LabelsBrowser:
    """Filter, page, open, edit, delete and export the stored examples; agreement and metrics."""

    def __init__(self, store: Any, bar: ReviewerBar, family: Family = Family.LLAMA_GUARD_4):
        self.store = store
        self.bar = bar
        self.downloads = Downloads(bar.gate.limits.export_ttl)
        gr.Markdown("Examples that reviewers labelled, newest first. Filter them, open one to "
                    "see it whole and edit or delete labels, then export what the filters list "
                    "for `datasets.load_dataset` (JSONL, Parquet) or for fine-tuning Llama Guard."
                    + (" **Reviewers only:** sign in at the top of the page."
                       if bar.gate.restricted else ""))
        gr.Markdown(SHORTCUTS, elem_id="gl-shortcuts")
        self._list_ui(family)
        self._open_ui()
        self._export_ui()
        self._agreement_ui()
        self._lead_ui()
        self._measure_ui()

    # ---- layout ----

    def _list_ui(self, family: Family) -> None:
        with gr.Row():
            self.label = gr.Dropdown(["any", "safe", "unsafe"], value="any", label="Gold label")
            # The loaded model's names; each example's own family names it when opened.
            self.category = gr.Dropdown([("any", ""), *choices(family)],
                                        value="", label="Category")
            self.disagreement = gr.Dropdown(list(view.DISAGREEMENT), value="any",
                                            label="Disagreement", elem_id="gl-labels-disagree",
                                            info="Model vs reviewers, or reviewers among "
                                                 "themselves")
            self.model = gr.Textbox(label="Model", max_lines=1)
            self.reviewer = gr.Textbox(label="Reviewer", max_lines=1)
        with gr.Row():
            self.since = gr.Textbox(label="Since (ISO date)", max_lines=1,
                                    placeholder="2025-05-01")
            self.until = gr.Textbox(label="Until (ISO date, exclusive)", max_lines=1,
                                    placeholder="2025-06-01")
            self.text = gr.Textbox(label="Search text and notes", max_lines=1,
                                   elem_id="gl-labels-search")
        with gr.Row():
            self.refresh = gr.Button("Refresh", size="sm", elem_id="gl-labels-refresh")
            self.prev_page = gr.Button("◀ Page", size="sm")
            self.page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=0,
                                  min_width=90)
            self.next_page = gr.Button("Page ▶", size="sm")
        self.caption = gr.Markdown("", elem_id="gl-labels-caption")
        self.table = gr.Dataframe(headers=view.LIST_HEADERS, interactive=False, wrap=True,
                                  datatype="str", column_widths=LIST_WIDTHS,
                                  elem_id="gl-labels-table")
        self.filters = [self.label, self.category, self.disagreement, self.model, self.reviewer,
                        self.since, self.until, self.text]
        self.ids = gr.State([])
        self.current = gr.State(None)

    def _open_ui(self) -> None:
        with gr.Accordion("Open an example", open=True, elem_id="gl-open"):
            with gr.Row():
                self.open_id = gr.Number(label="Example id", precision=0, minimum=1, scale=0,
                                         min_width=120, elem_id="gl-open-id")
                self.open = gr.Button("Open", size="sm", elem_id="gl-open-button")
                self.prev_example = gr.Button("◀ Previous", size="sm",
                                              elem_id="gl-prev-example")
                self.next_example = gr.Button("Next ▶", size="sm", elem_id="gl-next-example")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    self.conversation = gr.HTML(elem_id="gl-open-turns")
                    self.gallery = gr.Gallery(label="Images", visible=False, height=180,
                                              columns=5, format="png")
                with gr.Column(scale=2):
                    self.answer = gr.HTML()
            self.labels = gr.Dataframe(headers=view.LABEL_HEADERS, interactive=False, wrap=True,
                                       label="Labels", datatype="str", elem_id="gl-open-labels")
            with gr.Accordion("Label history (edits and deletions)", open=False):
                self.history = gr.Dataframe(headers=view.HISTORY_HEADERS, interactive=False,
                                            wrap=True, datatype="str")
            gr.Markdown("**Your label** (creates yours, or edits it; the history keeps the old "
                        "one)")
            with gr.Row():
                self.edit_label = gr.Radio(["safe", "unsafe"], label="Label",
                                           elem_id="gl-edit-label")
                self.edit_note = gr.Textbox(label="Note", max_lines=3)
            self.edit_categories = gr.CheckboxGroup([], label="Violated categories",
                                                    elem_id="gl-edit-categories")
            self.edit_none_fits = gr.Checkbox(False, label="Unsafe, and none of these categories "
                                              "fits", elem_id="gl-edit-none-fits")
            self.edit_save = gr.Button("Save my label", size="sm", elem_id="gl-edit-save")
            self._open_prompt_guard_ui()
            with gr.Row():
                self.delete_id = gr.Dropdown([], label="Label to delete", scale=1,
                                             elem_id="gl-delete-id")
                self.delete_reason = gr.Textbox(label="Reason (required, recorded)",
                                                max_lines=2, scale=2, elem_id="gl-delete-reason")
                self.delete = gr.Button("Delete label", size="sm", variant="stop", scale=0,
                                        elem_id="gl-delete")
            self.open_status = gr.HTML(elem_id="gl-open-status")

    def _open_prompt_guard_ui(self) -> None:
        """Prompt Guard's own labels of the open example: per user message, benign or malicious
        (a jailbreak or prompt injection), beside the Llama Guard labels."""
        with gr.Accordion("Prompt Guard labels (per user message)", open=True,
                          elem_id="gl-open-pg"):
            self.pgl_table = gr.Dataframe(headers=view.PROMPT_GUARD_HEADERS, interactive=False,
                                          wrap=True, datatype="str", elem_id="gl-open-pg-table")
            gr.Markdown("**Your Prompt Guard labels** (per user message; the history keeps the "
                        "old ones)")
            with gr.Row():
                self.pgl_malicious = gr.CheckboxGroup(
                    [], label="Malicious (a jailbreak or prompt injection)",
                    elem_id="gl-pg-malicious", scale=2)
                self.pgl_benign = gr.CheckboxGroup([], label="Benign", elem_id="gl-pg-benign",
                                                   scale=2)
                self.pgl_save = gr.Button("Save my Prompt Guard labels", size="sm", scale=0,
                                          elem_id="gl-pg-save")

    def _export_ui(self) -> None:
        with gr.Row():
            self.format = gr.Radio(list(FORMATS), value="jsonl", label="Export format",
                                   info="Exports what the filters above list, every page")
            self.export_labels = gr.Textbox(
                "final", label="Labels", max_lines=1, elem_id="gl-export-labels",
                info="final (one per example), all, or reviewer:NAME")
            self.export = gr.Button("Export", size="sm", elem_id="gl-export")
            self.download = gr.HTML("", elem_id="gl-export-file")
            self.download_url = gr.Textbox(visible=False, label="Download link")

    def _agreement_ui(self) -> None:
        with gr.Accordion("Agreement between reviewers", open=False, elem_id="gl-agreement"):
            self.agree = gr.Button("Compute agreement", size="sm", elem_id="gl-agree")
            self.agree_note = gr.Markdown("")
            self.pairs = gr.Dataframe(headers=view.PAIR_HEADERS, interactive=False,
                                      label="Per reviewer pair", datatype="str")
            self.agree_categories = gr.Dataframe(headers=view.CATEGORY_AGREEMENT_HEADERS,
                                                 interactive=False, label="Per category")
            self.disagree_caption = gr.Markdown("", elem_id="gl-disagree-caption")
            self.disagree_table = gr.Dataframe(
                headers=view.DISAGREEMENT_HEADERS, interactive=False, wrap=True, datatype="str",
                label="Where reviewers disagree", column_widths=["56px", "auto", "auto", "96px"],
                elem_id="gl-disagreements")
            self.disagree_ids = gr.State([])
            self.disagree_json = gr.JSON(visible=False)

    def _lead_ui(self) -> None:
        with gr.Accordion("Disagreements to resolve (leads)", open=False, elem_id="gl-lead"):
            gr.Markdown("Examples whose reviewers reached their queue's number of reviews and "
                        "disagree: they have no final label until a lead decides one, with a "
                        "reason. Metrics, tuning and exports use final labels.")
            self.lead_refresh = gr.Button("Show open disagreements", size="sm",
                                          elem_id="gl-lead-refresh")
            self.lead_table = gr.Dataframe(headers=view.LEAD_HEADERS, interactive=False,
                                           wrap=True, datatype="str", elem_id="gl-lead-table")
            self.lead_ids = gr.State([])
            self.lead_json = gr.JSON(visible=False)
            with gr.Row():
                self.lead_example = gr.Number(label="Example id", precision=0, minimum=1,
                                              scale=0, min_width=120, elem_id="gl-lead-example")
                self.lead_label = gr.Radio(["safe", "unsafe"], label="Final label",
                                           elem_id="gl-lead-label")
                self.lead_categories = gr.Textbox(label="Categories (S1,S10)", max_lines=1,
                                                  elem_id="gl-lead-categories")
                self.lead_none_fits = gr.Checkbox(False, label="None fits",
                                                  elem_id="gl-lead-none-fits")
            with gr.Row():
                self.lead_reason = gr.Textbox(label="Why (required, recorded)", max_lines=2,
                                              elem_id="gl-lead-reason", scale=3)
                self.lead_resolve = gr.Button("Resolve", size="sm", variant="primary", scale=0,
                                              elem_id="gl-lead-resolve")
            self.lead_status = gr.HTML(elem_id="gl-lead-status")
            self._lead_prompt_guard_ui()
            self.lead_stats = gr.Button("Lead's view: reviewers and queues", size="sm",
                                        elem_id="gl-lead-view")
            self.lead_people = gr.Dataframe(headers=view.REVIEWER_STATS_HEADERS,
                                            interactive=False, label="Per reviewer",
                                            datatype="str", elem_id="gl-lead-reviewers")
            self.lead_queues = gr.Dataframe(headers=view.QUEUE_STATS_HEADERS, interactive=False,
                                            label="Per queue", datatype="str",
                                            elem_id="gl-lead-queues")
            self.lead_stats_json = gr.JSON(visible=False)

    def _lead_prompt_guard_ui(self) -> None:
        gr.Markdown("**Prompt Guard disagreements:** user messages whose reviewers reached the "
                    "number of reviews and disagree on benign or malicious.")
        self.pgd_refresh = gr.Button("Show open Prompt Guard disagreements", size="sm",
                                     elem_id="gl-pgd-refresh")
        self.pgd_table = gr.Dataframe(headers=view.PROMPT_GUARD_DISAGREEMENT_HEADERS,
                                      interactive=False, wrap=True, datatype="str",
                                      elem_id="gl-pgd-table")
        with gr.Row():
            self.pgd_example = gr.Number(label="Example id", precision=0, minimum=1, scale=0,
                                         min_width=110, elem_id="gl-pgd-example")
            self.pgd_message = gr.Number(label="Message", precision=0, minimum=1, scale=0,
                                         min_width=90, elem_id="gl-pgd-message")
            self.pgd_label = gr.Radio(["benign", "malicious"], label="Final Prompt Guard label",
                                      elem_id="gl-pgd-label")
            self.pgd_reason = gr.Textbox(label="Why (required, recorded)", max_lines=2, scale=2,
                                         elem_id="gl-pgd-reason")
            self.pgd_resolve = gr.Button("Resolve", size="sm", variant="primary", scale=0,
                                         elem_id="gl-pgd-resolve")
        self.pgd_status = gr.HTML(elem_id="gl-pgd-status")

    def _measure_ui(self) -> None:
        with gr.Accordion("Measure", open=False, elem_id="gl-measure"):
            gr.Markdown("Llama Guard against the final labels (one per example: its reviewers "
                        "agreed, or a lead decided), or every label, or one reviewer's; "
                        "examples the model never judged are left out; "
                        "per-category rates for each model family apart (a code such as S5 "
                        "names a different hazard in Llama Guard 2).")
            with gr.Row():
                self.m_model = gr.Textbox(label="Model (optional)", max_lines=1)
                self.m_reviewer = gr.Textbox(label="Reviewer (optional)", max_lines=1)
                self.m_kind = gr.Radio([("target FPR (at most)", "fpr"),
                                        ("target recall (at least)", "recall")], value="fpr",
                                       label="Suggest a threshold for", elem_id="gl-measure-kind")
                self.m_target = gr.Number(value=0.05, minimum=0, maximum=1, label="Target",
                                          elem_id="gl-measure-target",
                                          info="the FPR or recall to meet, from 0 to 1")
                self.m_typed = gr.Textbox(label="Threshold (type it, press Enter)", max_lines=1,
                                          elem_id="gl-measure-typed",
                                          info="empty: the model's own verdicts; e.g. 0.003")
                self.m_labels = gr.Dropdown(["final", "all"], value="final", label="Labels",
                                            allow_custom_value=True, elem_id="gl-measure-labels",
                                            info="final (one per example), all, reviewer:NAME")
                self.m_run = gr.Button("Measure", size="sm")
            self.m_summary = gr.Dataframe(headers=view.SUMMARY_HEADERS, interactive=False,
                                          label="Overall")
            self.m_confusion = gr.Dataframe(headers=view.CONFUSION_HEADERS, interactive=False,
                                            label="Confusion matrix")
            self.m_threshold = gr.Markdown("", elem_id="gl-measure-threshold")
            self.m_categories = gr.Dataframe(headers=view.CATEGORY_RATE_HEADERS,
                                             interactive=False, label="Per category")
            self.m_curve = gr.LinePlot(pd.DataFrame({"recall": [], "precision": []}),
                                       x="recall", y="precision",
                                       title="Precision-recall curve of p_unsafe")
            self._measure_prompt_guard_ui()

    def _measure_prompt_guard_ui(self) -> None:
        gr.Markdown("#### Prompt Guard against its labels\n\nEach user message's stored Prompt "
                    "Guard score (its maximum over 512-token windows) against the reviewers' "
                    "benign / malicious labels, as the model card measures it: ROC AUC, recall "
                    "at 1% FPR, AUPRC, and precision, recall and FPR at the threshold; one row "
                    "per Prompt Guard model and preprocessing.")
        with gr.Row():
            self.pg_labels = gr.Dropdown(["final", "all"], value="final", label="Labels",
                                         allow_custom_value=True, elem_id="gl-measure-pg-labels",
                                         info="final, all, reviewer:NAME")
            self.pg_threshold = gr.Number(0.9, minimum=0, maximum=1, label="Threshold",
                                          elem_id="gl-measure-pg-threshold",
                                          info="malicious when the score is at least this "
                                               "(0.9: LlamaFirewall's)")
            self.pg_target = gr.Number(0.01, minimum=0, maximum=1, label="Target FPR",
                                       elem_id="gl-measure-pg-target",
                                       info="suggest the threshold for at most this FPR")
            self.pg_run = gr.Button("Measure Prompt Guard", size="sm",
                                    elem_id="gl-measure-pg-run")
        self.pg_table = gr.Dataframe(headers=pg_measure.HEADERS, interactive=False,
                                     label="Prompt Guard", elem_id="gl-measure-pg-table")
        self.pg_words = gr.Markdown("", elem_id="gl-measure-pg-words")

    # ---- handlers ----

    def _reader(self, session, typed, profile, action: str) -> str:
        return self.bar.who(action, session, typed, profile)

    def _viewer(self, session, typed, profile, action: str) -> view.Reader:
        """The reader, with what they may not see yet (blind until done); leads see all."""
        name = self._reader(session, typed, profile, action)
        return view.Reader.of(self.store, name, lead=self.bar.gate.is_lead(name))

    def _show(self, example_id: int, who: view.Reader, status: str = "") -> dict:
        example = who.sees(self.store.get_example(example_id))
        images = view.images(example)
        label, codes, note = view.own_label(example, who.name)
        pg_choices = view.prompt_guard_choices(example)
        pg_mine = view.own_prompt_guard(self.store, example.id, who.name)
        return {
            self.current: example.id, self.open_id: example.id,
            self.conversation: view.conversation_html(example),
            self.gallery: gr.Gallery(value=images or None, visible=bool(images)),
            self.answer: view.answer_html(example),
            self.labels: _frame(view.label_rows(example), view.LABEL_HEADERS),
            self.history: _frame(view.history_rows(self.store, example.id, who),
                                 view.HISTORY_HEADERS),
            self.edit_label: label,
            self.edit_categories: gr.CheckboxGroup(choices=view.category_choices(example),
                                                   value=codes),
            self.edit_note: note,
            self.edit_none_fits: any(lb.none_fits for lb in example.labels
                                     if lb.reviewer == who.name),
            self.delete_id: gr.Dropdown(choices=[(f"#{lb.id} {lb.reviewer}: {lb.label}", lb.id)
                                                 for lb in example.labels], value=None),
            self.delete_reason: "",
            self.open_status: status,
            self.pgl_table: _frame(view.prompt_guard_table(self.store, example, who),
                                   view.PROMPT_GUARD_HEADERS),
            self.pgl_malicious: gr.CheckboxGroup(choices=pg_choices, value=pg_mine[0]),
            self.pgl_benign: gr.CheckboxGroup(choices=pg_choices, value=pg_mine[1]),
        }

    @property
    def _shown(self) -> list:
        return [self.current, self.open_id, self.conversation, self.gallery, self.answer,
                self.labels, self.history, self.edit_label, self.edit_categories,
                self.edit_note, self.edit_none_fits, self.delete_id, self.delete_reason,
                self.open_status, self.pgl_table, self.pgl_malicious, self.pgl_benign]

    def wire(self) -> None:
        # No handler is named as its endpoint: Gradio names the page's (private) listener after
        # its function, which would push the API's endpoint to "<name>_1".
        self._wire_list()
        self._wire_open()
        self._wire_edit()
        self._wire_export()
        self._wire_agreement()
        self._wire_lead()
        self._wire_measure()

    def _wire_list(self) -> None:
        listed = [self.table, self.ids, self.page, self.caption]

        def listing(reader, page, *values):
            filters = view.make_filter(**dict(zip(
                ["label", "category", "disagreement", "model", "reviewer", "since", "until",
                 "text"], values, strict=True)), page=page or 1)
            result = view.list_page(self.store, filters, reader)
            return {self.table: _frame(result.rows, view.LIST_HEADERS), self.ids: result.ids,
                    self.page: result.page, self.caption: result.caption}

        def list_filtered(session, typed, label, category, disagreement, model, reviewer, since,
                        until, text, page, profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "browse labels")
            return listing(reader, page, label, category, disagreement, model, reviewer, since,
                           until, text)

        def paged(step):
            def turn_page(session, typed, label, category, disagreement, model, reviewer, since,
                          until, text, page, profile: gr.OAuthProfile | None = None):
                reader = self._viewer(session, typed, profile, "browse labels")
                return listing(reader, max(1, int(page or 1) + step), label, category,
                               disagreement, model, reviewer, since, until, text)
            return turn_page

        inputs = [*self.bar.inputs, *self.filters, self.page]
        on_page_and_api(self.refresh.click, list_filtered, inputs, listed, api_name="list_labels")
        self.text.submit(in_place(list_filtered, listed), inputs, listed, **PRIVATE)

        # Filters apply as they change (from page 1); new examples appear without a reload.
        def first_page(session, typed, label, category, disagreement, model, reviewer, since,
                       until, text, page, profile: gr.OAuthProfile | None = None):
            return list_filtered(session, typed, label, category, disagreement, model, reviewer,
                                 since, until, text, 1, profile)

        quiet = {**PRIVATE, "show_progress": "hidden"}
        for box in (self.label, self.category, self.disagreement):
            box.change(in_place(first_page, listed), inputs, listed, **quiet)
        for box in (self.model, self.reviewer, self.since, self.until, self.text):
            box.blur(in_place(first_page, listed), inputs, listed, **quiet)

        def poll(session, typed, label, category, disagreement, model, reviewer, since, until,
                 text, page, ids, caption, profile: gr.OAuthProfile | None = None):
            try:
                reader = self._viewer(session, typed, profile, "browse labels")
                fresh = listing(reader, page, label, category, disagreement, model, reviewer,
                                since, until, text)
            except LabelsError:  # not a reviewer, or a filter being typed: stay quiet
                return dict.fromkeys(listed, gr.skip())
            if fresh[self.ids] == ids and fresh[self.caption] == caption:
                return dict.fromkeys(listed, gr.skip())
            return fresh

        gr.Timer(LIST_POLL_S).tick(poll, [*inputs, self.ids, self.caption], listed, **quiet)
        self.prev_page.click(in_place(paged(-1), listed), inputs, listed, **PRIVATE)
        self.next_page.click(in_place(paged(1), listed), inputs, listed, **PRIVATE)

    def _wire_open(self) -> None:
        shown = self._shown

        def open_by_id(session, typed, example_id, profile: gr.OAuthProfile | None = None):
            who = self._viewer(session, typed, profile, "read labels")
            return self._show(view.parse_id(example_id), who)

        def stepper(step):
            def step_example(session, typed, ids, current,
                             profile: gr.OAuthProfile | None = None):
                who = self._viewer(session, typed, profile, "read labels")
                return self._show(view.next_id(ids, current, step), who)
            return step_example

        def select_row(session, typed, ids, evt: gr.SelectData,
                       profile: gr.OAuthProfile | None = None):
            row = _row(evt)
            if not ids or row is None or row >= len(ids):
                return {}
            who = self._viewer(session, typed, profile, "read labels")
            return self._show(ids[row], who)

        who_in = self.bar.inputs
        on_page_and_api(self.open.click, open_by_id, [*who_in, self.open_id], shown,
                        api_name="open_example")
        on_page_and_api(self.next_example.click, stepper(1), [*who_in, self.ids, self.current],
                        shown, api_name="next_example")
        self.prev_example.click(in_place(stepper(-1), shown), [*who_in, self.ids, self.current],
                                shown, **PRIVATE)
        self.table.select(in_place(select_row, shown), [*who_in, self.ids], shown, **PRIVATE)
        self.disagree_table.select(in_place(select_row, shown), [*who_in, self.disagree_ids],
                                   shown, **PRIVATE)

    def _wire_edit(self) -> None:
        bar, shown = self.bar, self._shown

        def save_mine(session, typed, current, label, categories, note, none_fits=False,
                      profile: gr.OAuthProfile | None = None):
            who = bar.who("edit labels", session, typed, profile, need_name=True)
            if current is None:
                raise view.InvalidLabel("Open an example first.")
            done = view.save_label(self.store, current, who, label, categories, note, none_fits)
            reader = view.Reader.of(self.store, who, lead=bar.gate.is_lead(who))
            return self._show(current, reader, f'<div class="gl-note">{html.escape(done)}</div>')

        def delete(session, typed, current, label_id, reason,
                   profile: gr.OAuthProfile | None = None):
            who = bar.who("delete labels", session, typed, profile, need_name=True)
            if current is None:
                raise view.InvalidLabel("Open an example first.")
            lead = bar.gate.is_lead(who)
            done = view.delete_label(self.store, current, label_id, who, reason, lead)
            reader = view.Reader.of(self.store, who, lead=lead)
            return self._show(current, reader, f'<div class="gl-note">{html.escape(done)}</div>')

        def clear_if_safe(label):
            # A safe label names no category: untick them as soon as "safe" is picked.
            return [] if label == "safe" else gr.skip()

        who_in = bar.inputs
        editing = [*who_in, self.current, self.edit_label, self.edit_categories, self.edit_note]
        self.edit_save.click(in_place(save_mine, shown), [*editing, self.edit_none_fits], shown,
                             api_name="edit_label_on_page", **PRIVATE)
        _api_only(save_mine, editing, shown, "edit_label")  # its inputs as before
        on_page_and_api(self.delete.click, delete,
                        [*who_in, self.current, self.delete_id, self.delete_reason], shown,
                        api_name="delete_label")
        self.edit_label.change(clear_if_safe, self.edit_label, self.edit_categories,
                               show_progress="hidden", **PRIVATE)

        def save_prompt_guard(session, typed, current, malicious, benign,
                              profile: gr.OAuthProfile | None = None):
            who = bar.who("label for Prompt Guard", session, typed, profile, need_name=True)
            if current is None:
                raise view.InvalidLabel("Open an example first.")
            done = view.save_prompt_guard(self.store, current, who, malicious, benign)
            reader = view.Reader.of(self.store, who, lead=bar.gate.is_lead(who))
            return self._show(current, reader, f'<div class="gl-note">{html.escape(done)}</div>')

        on_page_and_api(self.pgl_save.click, save_prompt_guard,
                        [*who_in, self.current, self.pgl_malicious, self.pgl_benign], shown,
                        api_name="save_prompt_guard_labels")

    def _wire_export(self) -> None:
        bar, out = self.bar, [self.download, self.download_url]

        def send(session, typed, fmt, filters, request: gr.Request, profile,
                 labels: str = "final") -> dict:
            reader = self._viewer(session, typed, profile, "export labels")
            who = reader.name
            path, count = view.export_file(self.store, fmt, filters, reader=reader,
                                           labels=labels or "final")
            # Served by our own route, not from Gradio's cache: once, to this session, briefly.
            self.downloads.install_routes(request.app)
            link = self.downloads.issue(path, who, still_valid=lambda: bar.gate.active(session))
            gr.Info(view.exported(count, fmt, filters))
            return {self.download: view.download_html(link.url, link.filename, count,
                                                      duration(link.ttl), view.unit(fmt)),
                    self.download_url: link.url}

        def export_listed(session, typed, fmt, label, category, disagreement, model, reviewer,
                          since, until, text, labels="final", request: gr.Request = None,
                          profile: gr.OAuthProfile | None = None):
            filters = view.make_filter(label=label, category=category, disagreement=disagreement,
                                       model=model, reviewer=reviewer, since=since, until=until,
                                       text=text)
            return send(session, typed, fmt, filters, request, profile, labels)

        def export_all(session, typed, fmt, request: gr.Request,
                       profile: gr.OAuthProfile | None = None):
            return send(session, typed, fmt, None, request, profile)

        # The page adds its Labels choice; /export_filtered keeps its inputs (gradio_client
        # fills no defaults for these endpoints) and exports the final labels.
        listed = [*bar.inputs, self.format, *self.filters]
        self.export.click(in_place(export_listed, out), [*listed, self.export_labels], out,
                          api_name="export_filtered_on_page", **PRIVATE)
        _api_only(export_listed, listed, out, "export_filtered")
        # Its two inputs as before (gradio_client fills no defaults for unlisted endpoints, so
        # trailing inputs would break existing calls): every example.
        _api_only(export_all, [*bar.inputs, self.format], out, "export_labels")

    def _wire_agreement(self) -> None:
        tables = [self.agree_note, self.pairs, self.agree_categories]
        found_out = [self.disagree_caption, self.disagree_table, self.disagree_ids]

        def agree(session, typed, profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "see reviewer agreement")
            note, pairs, cats = view.agreement_tables(self.store, reader)
            return {self.agree_note: note, self.pairs: _frame(pairs, view.PAIR_HEADERS),
                    self.agree_categories: _frame(cats, view.CATEGORY_AGREEMENT_HEADERS)}

        def agree_and_list(session, typed, profile: gr.OAuthProfile | None = None):
            shown = agree(session, typed, profile)
            reader = self._viewer(session, typed, profile, "see reviewer agreement")
            found = view.disagreements(self.store, reader=reader)
            return {**shown, self.disagree_caption: found.caption,
                    self.disagree_table: _frame(found.rows, view.DISAGREEMENT_HEADERS),
                    self.disagree_ids: found.ids}

        def list_disagreements(session, typed, profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "see reviewer agreement")
            return {self.disagree_json: view.disagreements(self.store, reader=reader).to_json()}

        who_in = self.bar.inputs
        self.agree.click(in_place(agree_and_list, tables + found_out), who_in,
                         tables + found_out, **PRIVATE)
        # /agreement keeps its three outputs; the disagreements are an endpoint of their own.
        _api_only(agree, who_in, tables, "agreement")
        _api_only(list_disagreements, who_in, [self.disagree_json], "disagreements")

    def _wire_lead(self) -> None:
        listed = [self.lead_table, self.lead_ids, self.lead_json]

        def lead_list(session, typed, profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "resolve disagreements")
            rows, ids, items = view.lead_queue(self.store, reader)
            return {self.lead_table: _frame(rows, view.LEAD_HEADERS), self.lead_ids: ids,
                    self.lead_json: items}

        def lead_resolve(session, typed, example_id, label, categories, none_fits, reason,
                         profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "resolve disagreements")
            done = view.resolve(self.store, reader, example_id, label,
                                [c for c in (categories or "").replace(" ", ",").split(",") if c],
                                none_fits, reason)
            rows, ids, items = view.lead_queue(self.store, reader)
            return {self.lead_status: f'<div class="gl-note">{html.escape(done)}</div>',
                    self.lead_table: _frame(rows, view.LEAD_HEADERS), self.lead_ids: ids,
                    self.lead_json: items, self.lead_reason: ""}

        def pick(ids, evt: gr.SelectData):
            row = _row(evt)
            return ids[row] if ids and row is not None and row < len(ids) else gr.skip()

        on_page_and_api(self.lead_refresh.click, lead_list, self.bar.inputs, listed,
                        api_name="lead_disagreements")
        on_page_and_api(self.lead_resolve.click, lead_resolve,
                        [*self.bar.inputs, self.lead_example, self.lead_label,
                         self.lead_categories, self.lead_none_fits, self.lead_reason],
                        [self.lead_status, *listed, self.lead_reason],
                        api_name="resolve_disagreement")
        self.lead_table.select(pick, [self.lead_ids], [self.lead_example], **PRIVATE)

        def lead_stats(session, typed, profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "see the lead's view")
            people, by_queue, data = view.lead_view(self.store, reader)
            return {self.lead_people: _frame(people, view.REVIEWER_STATS_HEADERS),
                    self.lead_queues: _frame(by_queue, view.QUEUE_STATS_HEADERS),
                    self.lead_stats_json: data}

        on_page_and_api(self.lead_stats.click, lead_stats, self.bar.inputs,
                        [self.lead_people, self.lead_queues, self.lead_stats_json],
                        api_name="lead_view")
        self._wire_lead_prompt_guard()

    def _wire_lead_prompt_guard(self) -> None:
        def pg_list(session, typed, profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "resolve disagreements")
            view.check_lead(reader, "resolve disagreements")
            return {self.pgd_table: _frame(view.prompt_guard_disagreement_rows(self.store),
                                           view.PROMPT_GUARD_DISAGREEMENT_HEADERS)}

        def pg_resolve(session, typed, example_id, message, label, reason,
                       profile: gr.OAuthProfile | None = None):
            reader = self._viewer(session, typed, profile, "resolve disagreements")
            done = view.resolve_prompt_guard(self.store, reader, example_id, message, label,
                                             reason)
            return {self.pgd_status: f'<div class="gl-note">{html.escape(done)}</div>',
                    self.pgd_table: _frame(view.prompt_guard_disagreement_rows(self.store),
                                           view.PROMPT_GUARD_DISAGREEMENT_HEADERS),
                    self.pgd_reason: ""}

        def pick(table, evt: gr.SelectData):
            row = _row(evt)
            rows = table.values.tolist() if hasattr(table, "values") else (table or [])
            if row is None or row >= len(rows):
                return gr.skip(), gr.skip()
            return rows[row][0], rows[row][1]

        on_page_and_api(self.pgd_refresh.click, pg_list, self.bar.inputs, [self.pgd_table],
                        api_name="prompt_guard_disagreements")
        on_page_and_api(self.pgd_resolve.click, pg_resolve,
                        [*self.bar.inputs, self.pgd_example, self.pgd_message, self.pgd_label,
                         self.pgd_reason], [self.pgd_status, self.pgd_table, self.pgd_reason],
                        api_name="resolve_prompt_guard")
        self.pgd_table.select(pick, [self.pgd_table], [self.pgd_example, self.pgd_message],
                              **PRIVATE)

    def _wire_measure(self) -> None:
        def measure_labels(session, typed, model, reviewer, target, labels="final",
                           target_kind="fpr", at="", profile: gr.OAuthProfile | None = None):
            self._reader(session, typed, profile, "measure the model")
            m = view.measure(self.store, model=model, reviewer=reviewer, target_fpr=target,
                             labels=labels, target=target_kind, threshold=at)
            return {self.m_summary: _frame(m.summary, view.SUMMARY_HEADERS),
                    self.m_confusion: _frame(m.confusion, view.CONFUSION_HEADERS),
                    self.m_categories: _frame(m.categories, view.CATEGORY_RATE_HEADERS),
                    self.m_curve: pd.DataFrame(m.curve), self.m_threshold: m.threshold}

        asked = [*self.bar.inputs, self.m_model, self.m_reviewer, self.m_target]
        shown = [self.m_summary, self.m_confusion, self.m_categories, self.m_curve,
                 self.m_threshold]
        on_page = [*asked, self.m_labels, self.m_kind, self.m_typed]
        self.m_run.click(in_place(measure_labels, shown), on_page, shown,
                         api_name="measure_on_page", **PRIVATE)
        # Enter applies a typed threshold (or target) at once, without leaving the box.
        gr.on([self.m_typed.submit, self.m_target.submit], in_place(measure_labels, shown),
              on_page, shown, **PRIVATE)
        _api_only(measure_labels, asked, shown, "measure")  # its inputs as before: final labels
        self._wire_measure_prompt_guard()

    def _wire_measure_prompt_guard(self) -> None:
        def measure_prompt_guard(session, typed, labels, threshold, target,
                                 profile: gr.OAuthProfile | None = None):
            self._reader(session, typed, profile, "measure Prompt Guard")
            m = pg_measure.measure_prompt_guard(self.store, labels=labels, target_fpr=target,
                                                threshold=threshold)
            return {self.pg_table: _frame(m.rows, pg_measure.HEADERS), self.pg_words: m.words}

        shown = [self.pg_table, self.pg_words]
        self.pg_run.click(in_place(measure_prompt_guard, shown),
                          [*self.bar.inputs, self.pg_labels, self.pg_threshold, self.pg_target],
                          shown, **PRIVATE)
