"""The Review panel (after a run) and the Labeled examples tab: gradio components over review.py."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from guard.core.categories import LLAMA_GUARD_4_CATEGORIES
from guard_app import labels_view as view
from guard_app import review
from guard_app.exports import Downloads
from guard_app.guarded import guarded  # escapes its messages: toasts render HTML
from guard_app.reviewers import Mode, ReviewerGate, duration
from labels.export import FORMATS

NAMES = {c.code: c.card_name for c in LLAMA_GUARD_4_CATEGORIES}
PRIVATE = {"api_visibility": "private"}


def category_choices(run: dict[str, Any]) -> list[tuple[str, str]]:
    names = dict(NAMES)
    first = len(LLAMA_GUARD_4_CATEGORIES) + 1
    names.update({f"S{first + i}": c["name"] for i, c in enumerate(run.get("custom", []))})
    return [(f"{code} {names.get(code, '')}".strip(), code)
            for code in run["result"].get("enabled_categories", [])]



def _username(profile: Any) -> str | None:
    return getattr(profile, "username", None) or None


def _address(request: Any) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or None


SHORTCUTS = ("**Keyboard shortcuts:** Alt+R run both guards · Alt+W the model was wrong · "
             "Alt+G the model was right · Alt+S save the label · Alt+N open the next example · "
             "Alt+P the previous one.")


class ReviewerBar:
    """Who is reviewing: Hugging Face login on Spaces, a password sign-in with accounts, else a name.

    Handlers ask `who(...)` with the session, the typed name and the OAuth profile, so the gate
    holds for API calls too, not only on the page. The session state holds only the gate's
    opaque token; when Gradio drops the state (an hour after the tab closed) the token is signed
    out server-side too.
    """

    def __init__(self, gate: ReviewerGate):
        self.gate = gate
        # No time_to_live: the gate's table decides expiry, so the reviewer reads "expired"
        # rather than "sign in"; Gradio still drops the state an hour after the tab closes.
        self.session = gr.State(None, delete_callback=gate.sign_out)
        self.password = None
        titles = {Mode.OPEN: "Reviewer", Mode.ACCOUNTS: "Reviewer sign-in",
                  Mode.SPACE: "Reviewer sign-in"}
        with gr.Accordion(titles[gate.mode], open=gate.mode is Mode.OPEN, elem_id="gl-reviewer"):
            if gate.mode is Mode.SPACE:
                gr.Markdown("Reviewers sign in with their Hugging Face account to label, browse, "
                            "export and measure. Anyone can run the models.")
                gr.LoginButton()
                self.name = gr.Textbox(visible=False)
            elif gate.mode is Mode.ACCOUNTS:
                gr.Markdown("Labelling, browsing, export and measurement are for reviewers. "
                            "Anyone can run the models.")
                with gr.Row():
                    self.name = gr.Textbox(label="Reviewer name", max_lines=1,
                                           elem_id="gl-reviewer-name")
                    self.password = gr.Textbox(label="Password", type="password", max_lines=1,
                                               elem_id="gl-reviewer-password")
                with gr.Row():
                    self.sign_in = gr.Button("Sign in", size="sm", elem_id="gl-sign-in")
                    self.sign_out = gr.Button("Sign out", size="sm")
            else:
                self.name = gr.Textbox(label="Reviewer", max_lines=1, elem_id="gl-reviewer-name",
                                       placeholder="your name or handle: saved with your labels")
            self.status = gr.HTML("", elem_id="gl-reviewer-status")
        self.inputs = [self.session, self.name]

    def who(self, action: str, session: str | None, typed: str | None, profile: Any,
            need_name: bool = False) -> str:
        return self.gate.who(action, session=session, typed=typed,
                             oauth_username=_username(profile), need_name=need_name)

    def wire(self) -> None:
        if self.gate.mode is not Mode.ACCOUNTS:
            return

        @guarded
        def sign_in(name, password, session, request: gr.Request):
            token = self.gate.sign_in(name, password, address=_address(request))
            self.gate.sign_out(session)  # this page's previous sign-in, if any, ends here
            who = self.gate.who("review", session=token)
            lasts = duration(self.gate.limits.session_ttl)
            return {self.session: token, self.password: "",
                    self.status: f"Signed in as <b>{html.escape(who)}</b> for {lasts}."}

        def sign_out(session):
            self.gate.sign_out(session)
            return {self.session: None, self.status: "Signed out."}

        signing_in = [self.name, self.password, self.session]
        self.sign_in.click(sign_in, signing_in, [self.session, self.password, self.status],
                           api_name="reviewer_sign_in")
        self.password.submit(sign_in, signing_in, [self.session, self.password, self.status],
                             **PRIVATE)
        self.sign_out.click(sign_out, [self.session], [self.session, self.status],
                            api_name="reviewer_sign_out")


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

        @guarded
        def save(session, typed, run, threshold, right, label, categories, note,
                 profile: gr.OAuthProfile | None = None):
            reviewer = self.bar.who("save labels", session, typed, profile, need_name=True)
            if not run:
                raise view.InvalidLabel("Run the guards on a conversation first, then review it.")
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


def _frame(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


class LabelsBrowser:
    """Filter, page, open, edit, delete and export the stored examples; agreement and metrics."""

    def __init__(self, store: Any, bar: ReviewerBar):
        self.store = store
        self.bar = bar
        self.downloads = Downloads(bar.gate.limits.export_ttl)
        gr.Markdown("Examples that reviewers labelled, newest first. Filter them, open one to "
                    "see it whole and edit or delete labels, then export for "
                    "`datasets.load_dataset` (JSONL, Parquet) or for fine-tuning Llama Guard."
                    + (" **Reviewers only:** sign in at the top of the page."
                       if bar.gate.restricted else ""))
        gr.Markdown(SHORTCUTS, elem_id="gl-shortcuts")
        with gr.Row():
            self.label = gr.Dropdown(["any", "safe", "unsafe"], value="any", label="Gold label")
            self.category = gr.Dropdown([("any", "")] + [(f"{c} {n}", c) for c, n in NAMES.items()],
                                        value="", label="Category")
            self.disagreement = gr.Dropdown(list(view.DISAGREEMENT), value="any",
                                            label="Model vs reviewers")
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
                                  datatype="str", elem_id="gl-labels-table")
        self.ids = gr.State([])
        self.current = gr.State(None)

        with gr.Accordion("Open an example", open=True, elem_id="gl-open"):
            with gr.Row():
                self.open_id = gr.Number(label="Example id", precision=0, minimum=1, scale=0,
                                         min_width=120)
                self.open = gr.Button("Open", size="sm", elem_id="gl-open-button")
                self.prev_example = gr.Button("◀ Previous", size="sm",
                                              elem_id="gl-prev-example")
                self.next_example = gr.Button("Next ▶", size="sm", elem_id="gl-next-example")
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    self.conversation = gr.HTML()
                    self.gallery = gr.Gallery(label="Images", visible=False, height=180,
                                              columns=5, format="png")
                with gr.Column(scale=2):
                    self.answer = gr.HTML()
            self.labels = gr.Dataframe(headers=view.LABEL_HEADERS, interactive=False, wrap=True,
                                       label="Labels", datatype="str")
            with gr.Accordion("Label history (edits and deletions)", open=False):
                self.history = gr.Dataframe(headers=view.HISTORY_HEADERS, interactive=False,
                                            wrap=True, datatype="str")
            gr.Markdown("**Your label** (creates yours, or edits it; the history keeps the old "
                        "one)")
            with gr.Row():
                self.edit_label = gr.Radio(["safe", "unsafe"], label="Label")
                self.edit_note = gr.Textbox(label="Note", max_lines=3)
            self.edit_categories = gr.CheckboxGroup([], label="Violated categories")
            self.edit_save = gr.Button("Save my label", size="sm", elem_id="gl-edit-save")
            with gr.Row():
                self.delete_id = gr.Dropdown([], label="Label to delete", scale=1)
                self.delete_reason = gr.Textbox(label="Reason (required, recorded)",
                                                max_lines=2, scale=2)
                self.delete = gr.Button("Delete label", size="sm", variant="stop", scale=0)
            self.open_status = gr.HTML(elem_id="gl-open-status")

        with gr.Row():
            self.format = gr.Radio(list(FORMATS), value="jsonl", label="Export format")
            self.export = gr.Button("Export", size="sm", elem_id="gl-export")
            self.download = gr.HTML("", elem_id="gl-export-file")
            self.download_url = gr.Textbox(visible=False, label="Download link")

        with gr.Accordion("Agreement between reviewers", open=False):
            self.agree = gr.Button("Compute agreement", size="sm")
            self.agree_note = gr.Markdown("")
            self.pairs = gr.Dataframe(headers=view.PAIR_HEADERS, interactive=False,
                                      label="Per reviewer pair", datatype="str")
            self.agree_categories = gr.Dataframe(headers=view.CATEGORY_AGREEMENT_HEADERS,
                                                 interactive=False, label="Per category")

        with gr.Accordion("Measure", open=False, elem_id="gl-measure"):
            gr.Markdown("Llama Guard against the reviewers' gold labels, one row per label.")
            with gr.Row():
                self.m_model = gr.Textbox(label="Model (optional)", max_lines=1)
                self.m_reviewer = gr.Textbox(label="Reviewer (optional)", max_lines=1)
                self.m_target = gr.Number(value=0.05, minimum=0, maximum=1,
                                          label="Target false-positive rate")
                self.m_run = gr.Button("Measure", size="sm")
            self.m_summary = gr.Dataframe(headers=view.SUMMARY_HEADERS, interactive=False,
                                          label="Overall")
            self.m_confusion = gr.Dataframe(headers=view.CONFUSION_HEADERS, interactive=False,
                                            label="Confusion matrix")
            self.m_threshold = gr.Markdown("")
            self.m_categories = gr.Dataframe(headers=view.CATEGORY_RATE_HEADERS,
                                             interactive=False, label="Per category")
            self.m_curve = gr.LinePlot(pd.DataFrame({"recall": [], "precision": []}),
                                       x="recall", y="precision",
                                       title="Precision-recall curve of p_unsafe")

    # ---- handlers ----

    def _reader(self, session, typed, profile, action: str) -> str:
        return self.bar.who(action, session, typed, profile)

    def _filters(self, label, category, disagreement, model, reviewer, since, until, text, page):
        return view.make_filter(label=label, category=category, disagreement=disagreement,
                                model=model, reviewer=reviewer, since=since, until=until,
                                text=text, page=page or 1)

    def _show(self, example_id: int, who: str, status: str = "") -> dict:
        example = self.store.get_example(example_id)
        images = view.images(example)
        label, codes, note = view.own_label(example, who)
        return {
            self.current: example.id, self.open_id: example.id,
            self.conversation: view.conversation_html(example),
            self.gallery: gr.Gallery(value=images or None, visible=bool(images)),
            self.answer: view.answer_html(example),
            self.labels: _frame(view.label_rows(example), view.LABEL_HEADERS),
            self.history: _frame(view.history_rows(self.store, example.id), view.HISTORY_HEADERS),
            self.edit_label: label,
            self.edit_categories: gr.CheckboxGroup(choices=view.category_choices(example),
                                                   value=codes),
            self.edit_note: note,
            self.delete_id: gr.Dropdown(choices=[(f"#{lb.id} {lb.reviewer}: {lb.label}", lb.id)
                                                 for lb in example.labels], value=None),
            self.delete_reason: "",
            self.open_status: status,
        }

    def wire(self) -> None:
        bar = self.bar
        filters = [self.label, self.category, self.disagreement, self.model, self.reviewer,
                   self.since, self.until, self.text]
        listed = [self.table, self.ids, self.page, self.caption]
        shown = [self.current, self.open_id, self.conversation, self.gallery, self.answer,
                 self.labels, self.history, self.edit_label, self.edit_categories,
                 self.edit_note, self.delete_id, self.delete_reason, self.open_status]

        def listing(page, *values):
            result = view.list_page(self.store, self._filters(*values, page))
            return {self.table: _frame(result.rows, view.LIST_HEADERS), self.ids: result.ids,
                    self.page: result.page, self.caption: result.caption}

        @guarded
        def list_labels(session, typed, label, category, disagreement, model, reviewer, since,
                        until, text, page, profile: gr.OAuthProfile | None = None):
            self._reader(session, typed, profile, "browse labels")
            return listing(page, label, category, disagreement, model, reviewer, since, until,
                           text)

        def paged(step):
            @guarded
            def turn(session, typed, label, category, disagreement, model, reviewer, since,
                     until, text, page, profile: gr.OAuthProfile | None = None):
                self._reader(session, typed, profile, "browse labels")
                return listing(max(1, int(page or 1) + step), label, category, disagreement,
                               model, reviewer, since, until, text)
            return turn

        @guarded
        def open_example(session, typed, example_id, profile: gr.OAuthProfile | None = None):
            who = self._reader(session, typed, profile, "read labels")
            return self._show(view.parse_id(example_id), who)

        def stepper(step):
            @guarded
            def go(session, typed, ids, current, profile: gr.OAuthProfile | None = None):
                who = self._reader(session, typed, profile, "read labels")
                return self._show(view.next_id(ids, current, step), who)
            return go

        def select_row(session, typed, ids, evt: gr.SelectData,
                       profile: gr.OAuthProfile | None = None):
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if not ids or row is None or row >= len(ids):
                return {}
            who = self._reader(session, typed, profile, "read labels")
            return self._show(ids[row], who)

        @guarded
        def save_mine(session, typed, current, label, categories, note,
                      profile: gr.OAuthProfile | None = None):
            who = bar.who("edit labels", session, typed, profile, need_name=True)
            if current is None:
                raise view.InvalidLabel("Open an example first.")
            done = view.save_label(self.store, current, who, label, categories, note)
            return self._show(current, who, f'<div class="gl-note">{html.escape(done)}</div>')

        @guarded
        def delete(session, typed, current, label_id, reason,
                   profile: gr.OAuthProfile | None = None):
            who = bar.who("delete labels", session, typed, profile, need_name=True)
            if current is None:
                raise view.InvalidLabel("Open an example first.")
            done = view.delete_label(self.store, current, label_id, who, reason)
            return self._show(current, who, f'<div class="gl-note">{html.escape(done)}</div>')

        @guarded
        def export(session, typed, fmt, request: gr.Request,
                   profile: gr.OAuthProfile | None = None):
            who = self._reader(session, typed, profile, "export labels")
            path, count = review.export_file(self.store, fmt)
            # Served by our own route, not from Gradio's cache: once, to this session, briefly.
            self.downloads.install_routes(request.app)
            link = self.downloads.issue(path, who, still_valid=lambda: bar.gate.active(session))
            gr.Info(f"Exported {count} example{'s' if count != 1 else ''}.")
            return {self.download: view.download_html(link.url, link.filename, count,
                                                      duration(link.ttl)),
                    self.download_url: link.url}

        @guarded
        def agree(session, typed, profile: gr.OAuthProfile | None = None):
            self._reader(session, typed, profile, "see reviewer agreement")
            note, pairs, cats = view.agreement_tables(self.store)
            return {self.agree_note: note, self.pairs: _frame(pairs, view.PAIR_HEADERS),
                    self.agree_categories: _frame(cats, view.CATEGORY_AGREEMENT_HEADERS)}

        @guarded
        def measure(session, typed, model, reviewer, target,
                    profile: gr.OAuthProfile | None = None):
            self._reader(session, typed, profile, "measure the model")
            m = view.measure(self.store, model=model, reviewer=reviewer, target_fpr=target)
            return {self.m_summary: _frame(m.summary, view.SUMMARY_HEADERS),
                    self.m_confusion: _frame(m.confusion, view.CONFUSION_HEADERS),
                    self.m_categories: _frame(m.categories, view.CATEGORY_RATE_HEADERS),
                    self.m_curve: pd.DataFrame(m.curve), self.m_threshold: m.threshold}

        who_in = bar.inputs
        self.refresh.click(list_labels, [*who_in, *filters, self.page], listed,
                           api_name="list_labels")
        self.text.submit(list_labels, [*who_in, *filters, self.page], listed, **PRIVATE)
        self.prev_page.click(paged(-1), [*who_in, *filters, self.page], listed, **PRIVATE)
        self.next_page.click(paged(1), [*who_in, *filters, self.page], listed, **PRIVATE)
        self.open.click(open_example, [*who_in, self.open_id], shown, api_name="open_example")
        self.next_example.click(stepper(1), [*who_in, self.ids, self.current], shown,
                                api_name="next_example")
        self.prev_example.click(stepper(-1), [*who_in, self.ids, self.current], shown,
                                **PRIVATE)
        self.table.select(guarded(select_row), [*who_in, self.ids], shown, **PRIVATE)
        self.edit_save.click(save_mine, [*who_in, self.current, self.edit_label,
                                         self.edit_categories, self.edit_note], shown,
                             api_name="edit_label")
        self.delete.click(delete, [*who_in, self.current, self.delete_id, self.delete_reason],
                          shown, api_name="delete_label")
        self.export.click(export, [*who_in, self.format], [self.download, self.download_url],
                          api_name="export_labels")
        self.agree.click(agree, who_in, [self.agree_note, self.pairs, self.agree_categories],
                         api_name="agreement")
        self.m_run.click(measure, [*who_in, self.m_model, self.m_reviewer, self.m_target],
                         [self.m_summary, self.m_confusion, self.m_categories, self.m_curve,
                          self.m_threshold], api_name="measure")
