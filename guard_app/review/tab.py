"""The Review panel under the Moderate tab's results: was the model right, the label, save."""

from __future__ import annotations

import functools
import html
from typing import Any

import gradio as gr

from guard.core.categories import Family, choices
from guard.core.errors import GuardError
from guard_app.guarded import guarded  # escaped messages: toasts render HTML
from guard_app.review import logic as review
from guard_app.review.queue_api import QueueApi
from guard_app.run import OUT_OF_DATE, PageRun, out_of_date
from guard_app.signin import ReviewerBar
from labels import prompt_guard as pg
from labels import queues
from labels.errors import InvalidLabel, LabelsError

PRIVATE = {"api_visibility": "private"}
PG_MALICIOUS = "Prompt Guard: malicious (a jailbreak or prompt injection)"
PG_BENIGN = "Prompt Guard: benign"


def prompt_guard_boxes(prefix: str) -> tuple[gr.CheckboxGroup, gr.CheckboxGroup]:
    """Prompt Guard's own label per user message: ticked malicious, ticked benign, or neither
    (no Prompt Guard label). Nothing is ticked until the reviewer says."""
    with gr.Row():
        malicious = gr.CheckboxGroup([], label=PG_MALICIOUS, elem_id=f"{prefix}-pg-malicious")
        benign = gr.CheckboxGroup([], label=PG_BENIGN, elem_id=f"{prefix}-pg-benign")
    return malicious, benign


def prompt_guard_said(marks: dict[int, bool]) -> str:
    bad = sum(marks.values())
    return (f" Prompt Guard: {bad} malicious, {len(marks) - bad} benign."
            if marks else "")
QUEUE_POLL_S = 10  # how often the queue list looks for new queues


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
            self.none_fits = gr.Checkbox(False, label="Unsafe, and none of these categories fits",
                                         elem_id="gl-review-none-fits")
            # Prompt Guard's own label per user message: was it an attack? Saved with the
            # example, beside the Llama Guard label (labels/prompt_guard.py).
            self.pg_malicious, self.pg_benign = prompt_guard_boxes("gl-review")
            self.note = gr.Textbox(label="Note", max_lines=3)
            self.save = gr.Button("Save label", variant="secondary", elem_id="gl-save-label")
            self.status = gr.HTML()
        self.outputs = [self.box, self.right, self.label, self.categories, self.none_fits,
                        self.pg_malicious, self.pg_benign, self.status]

    def after_run(self, run: PageRun, threshold: float) -> dict:
        if not run.judged:
            return {self.box: gr.Accordion(visible=False)}
        users = review.prompt_guard_choices(run)
        return {self.box: gr.Accordion(visible=True), self.right: None, self.label: None,
                self.categories: gr.CheckboxGroup(choices=category_choices(run), value=[]),
                self.none_fits: False,
                self.pg_malicious: gr.CheckboxGroup(choices=users, value=[]),
                self.pg_benign: gr.CheckboxGroup(choices=users, value=[]), self.status: ""}

    def wire(self, last: gr.State, slider: gr.Slider, max_images: int,
             page_now: gr.State | None = None) -> None:
        """`page_now`: the page's run fingerprint now (guard_app.run), to refuse a stale run."""
        def prefill(run, threshold, right):
            if not run or right not in ("right", "wrong"):
                return {self.label: gr.Radio(), self.categories: gr.CheckboxGroup()}
            label, codes = review.default_label(run.result, threshold, right == "right")
            return {self.label: label, self.categories: codes}

        def save_all(session, typed, run, threshold, right, label, categories, note, none_fits,
                     pg_malicious, pg_benign, now, profile):
            reviewer = self.bar.who("save labels", session, typed, profile, need_name=True)
            if not run:
                raise InvalidLabel("Run the guards on a conversation first, then review it.")
            if now is not None and out_of_date(run, now):
                raise InvalidLabel(OUT_OF_DATE)
            marks = review.prompt_guard_marks(pg_malicious, pg_benign)
            saved = review.save_review(self.store, run, threshold, reviewer=reviewer,
                                       model_right=right, label=label, categories=categories,
                                       note=note, max_images=max_images,
                                       none_fits=bool(none_fits),
                                       prompt_guard=marks)
            what = "new example" if saved.new_example else "example already stored"
            pg_said = prompt_guard_said(marks)
            return {self.status: f'<div class="gl-note" id="gl-review-status">Saved: example '
                                 f'#{saved.example_id} ({html.escape(what)}), label '
                                 f'{html.escape(saved.label_action)} by '
                                 f'{html.escape(reviewer)}.{html.escape(pg_said)}</div>'}

        self.right.change(prefill, [last, slider, self.right], [self.label, self.categories],
                          **PRIVATE)
        def save(session, typed, run, threshold, right, label, categories, note, none_fits=False,
                 now=None, profile: gr.OAuthProfile | None = None):
            """/save_label as before Prompt Guard labels: it gives none."""
            return save_all(session, typed, run, threshold, right, label, categories, note,
                            none_fits, None, None, now, profile)

        def save_with_prompt_guard(session, typed, run, threshold, right, label, categories,
                                   note, none_fits=False, pg_malicious=None, pg_benign=None,
                                   now=None, profile: gr.OAuthProfile | None = None):
            """The page's Save, and /save_label_prompt_guard: with a Prompt Guard label for
            each user message (by index) in `pg_malicious` or `pg_benign`."""
            return save_all(session, typed, run, threshold, right, label, categories, note,
                            none_fits, pg_malicious, pg_benign, now, profile)

        stale = [page_now] if page_now else []
        before = [*self.bar.inputs, last, slider, self.right, self.label, self.categories,
                  self.note, self.none_fits]
        with_pg = [*before, self.pg_malicious, self.pg_benign]
        @functools.wraps(save_with_prompt_guard)
        def save_on_page(*args: Any, **kwargs: Any) -> dict:
            """A refusal said under Save (and in a toast); a raised gr.Error would replace
            the status line with an "Error" badge and leave the last "Saved:" under it."""
            try:
                return save_with_prompt_guard(*args, **kwargs)
            except (LabelsError, GuardError) as exc:
                gr.Warning(html.escape(str(exc), quote=False))
                return {self.status: f'<div class="gl-problem" id="gl-review-refusal" '
                                     f'role="alert">Not saved: {html.escape(str(exc))}</div>'}

        self.save.click(guarded(save_on_page), [*with_pg, *stale], [self.status],
                        api_name="save_label_on_page", **PRIVATE)
        # The API keeps /save_label's inputs (gradio_client fills no trailing defaults) and
        # gets /save_label_prompt_guard for the Prompt Guard labels.
        with gr.Column(visible=False):
            gr.Button(visible=False).click(guarded(save), [*before, *stale], [self.status],
                                           api_name="save_label")
            gr.Button(visible=False).click(guarded(save_with_prompt_guard), [*with_pg, *stale],
                                           [self.status], api_name="save_label_prompt_guard")


QUEUE_KEYS = ("**Keys:** Ctrl+Enter submit and open the next item · Alt+K skip · Alt+B back to "
              "the item you just submitted (your label filled in, to change) · Alt+U unsafe · "
              "Alt+F safe (clears the categories) · Alt+1 … Alt+9 toggle S1-S9, Alt+0 S10, "
              "Alt+Shift+1 … Alt+Shift+4 S11-S14 (custom ones after). Keys act on the form you "
              "are using (the focused one, else the one on the screen), never on one out of "
              "view.")


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
                    # Under the stored answers, so that Submit stays on a 768 px screen.
                    self.pg_malicious, self.pg_benign = prompt_guard_boxes("gl-queue")
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
                        self.back = gr.Button("◀ Back", size="sm", elem_id="gl-queue-back")
                        # Beside the buttons, so that Submit stays on a 768 px screen.
                        self.none_fits = gr.Checkbox(False, label="Unsafe, none fits",
                                                     elem_id="gl-queue-none-fits", min_width=120)
            gr.Markdown(QUEUE_KEYS, elem_id="gl-queue-keys")
            self.status = gr.HTML(elem_id="gl-queue-status")
        self.shown = [self.item, self.opened, self.work, self.answer, self.conversation,
                      self.label, self.categories, self.none_fits, self.note, self.progress,
                      self.status, self.pg_malicious, self.pg_benign]

    def _show(self, queue: str, who: str, item: Any, status: str = "", mine: Any = None,
              mine_pg: Any = ()) -> dict:
        """The item to label (`mine`: the reviewer's label of it, filled in after Back, with
        `mine_pg` their Prompt Guard labels of its messages)."""
        progress = queues.progress(self.store, queue, who).sentence
        if item is None:
            return {self.item: None, self.work: gr.Row(visible=False),
                    self.progress: html.escape(progress),
                    self.status: f'<div class="gl-note">{html.escape(status)} Nothing left for '
                                 f'you in {html.escape(queue)}.</div>'}
        data = item.to_json()
        named = dict((code, label) for label, code in choices(data["family"]))
        pg_users = review.item_prompt_guard_choices(data)
        return {self.item: data, self.opened: data, self.work: gr.Row(visible=True),
                self.answer: review.stored_answer_html(data)
                + review.item_prompt_guard_html(data),
                self.pg_malicious: gr.CheckboxGroup(
                    choices=pg_users, value=[x.message_index for x in mine_pg if x.malicious]),
                self.pg_benign: gr.CheckboxGroup(
                    choices=pg_users,
                    value=[x.message_index for x in mine_pg if not x.malicious]),
                self.conversation: review.queue_item_html(data),
                self.label: mine.label if mine else None,
                self.categories: gr.CheckboxGroup(
                    choices=[(named.get(c, c), c) for c in data["codes"]],
                    value=list(mine.categories) if mine else []),
                self.none_fits: bool(mine and mine.none_fits),
                self.note: mine.note if mine else "", self.progress: html.escape(progress),
                self.status: f'<div class="gl-note">{html.escape(status)}</div>' if status
                else ""}

    def _in_status(self, fn: Any) -> Any:
        """`fn` with a refusal shown in the status line, every other output left as it was."""
        @functools.wraps(fn)
        def refused_here(*args: Any, **kwargs: Any) -> dict:
            try:
                return fn(*args, **kwargs)
            except LabelsError as exc:
                return {**dict.fromkeys(self.shown, gr.skip()),
                        self.status: f'<div class="gl-problem" id="gl-queue-refusal" '
                                     f'role="alert">{html.escape(str(exc))}</div>'}
        return refused_here

    def wire(self, demo: gr.Blocks) -> None:
        who_in, bar = self.bar.inputs, self.bar

        def who(action, session, typed, profile):
            return bar.who(action, session, typed, profile, need_name=True)

        def start(session, typed, queue, profile: gr.OAuthProfile | None = None):
            reviewer = who("review queues", session, typed, profile)
            return self._show(queue, reviewer, queues.next_item(self.store, queue, reviewer))

        def submit(session, typed, queue, item, label, categories, note, none_fits=False,
                   pg_malicious=None, pg_benign=None, profile: gr.OAuthProfile | None = None):
            reviewer = who("label queue items", session, typed, profile)
            if not item:
                raise InvalidLabel("Open an item first: pick a queue and press Start.")
            if label not in ("safe", "unsafe"):
                raise InvalidLabel("Pick the correct label first: safe or unsafe.")
            pg_labels = review.prompt_guard_marks(pg_malicious, pg_benign)
            done = queues.submit(self.store, queue, item["id"], reviewer, label,
                                 categories or (), note or "", none_fits=bool(none_fits),
                                 prompt_guard=pg_labels)
            return self._show(queue, reviewer, queues.next_item(self.store, queue, reviewer),
                              f"Saved as example #{done.example_id}."
                              f"{prompt_guard_said(pg_labels)}")

        def back(session, typed, queue, item, profile: gr.OAuthProfile | None = None):
            reviewer = who("go back in queues", session, typed, profile)
            # From an item reopened by Back, one further back; else the last one submitted.
            reopened = item and item.get("lease_expires_at") == ""
            found = queues.previous(self.store, queue, reviewer,
                                    before=item["id"] if reopened else None)
            if found is None:
                raise InvalidLabel("Nothing to go back to: you have not labelled an item of "
                                   "this queue before this one.")
            earlier, mine = found
            return self._show(queue, reviewer, earlier,
                              f"Back to item {earlier.position + 1}: your label is filled in; "
                              "change it and submit (the history keeps both).", mine,
                              pg.labels_of(self.store, mine.example_id, reviewer))

        def skip(session, typed, queue, item, profile: gr.OAuthProfile | None = None):
            reviewer = who("skip queue items", session, typed, profile)
            if not item:
                raise InvalidLabel("Open an item first: pick a queue and press Start.")
            queues.skip(self.store, queue, item["id"], reviewer)
            return self._show(queue, reviewer, queues.next_item(self.store, queue, reviewer),
                              f"Skipped item {item['position'] + 1}.")

        page = [*who_in, self.queue]
        # No overlay flashing between items, and no trip through Gradio's queue (plain SQLite
        # work, never a model): the next item is ready in a fraction of the time. Without the
        # queue a toast cannot reach the page, so refusals show in the panel's status line.
        quiet = {**PRIVATE, "show_progress": "hidden", "queue": False}
        self.start.click(self._in_status(start), page, self.shown, **quiet)
        self.submit.click(self._in_status(submit),
                          [*page, self.item, self.label, self.categories, self.note,
                           self.none_fits, self.pg_malicious, self.pg_benign], self.shown,
                          **quiet)
        self.skip.click(self._in_status(skip), [*page, self.item], self.shown, **quiet)
        self.back.click(self._in_status(back), [*page, self.item], self.shown, **quiet)
        # Picking "safe" clears the categories; "unsafe" leaves them alone (no stale value
        # written back over a box ticked meanwhile).
        self.label.change(lambda label: [] if label == "safe" else gr.skip(), [self.label],
                          [self.categories], show_progress="hidden", queue=False, **PRIVATE)
        demo.load(lambda: gr.Dropdown(choices=review.queue_choices(self.store)), None,
                  [self.queue], **PRIVATE)
        # A queue made meanwhile (Batch evaluation, the CLI, the API) appears without a reload.
        known = gr.State([])

        def new_queues(seen):
            names = review.queue_choices(self.store)
            if names == seen:
                return {self.queue: gr.skip(), known: gr.skip()}
            return {self.queue: gr.Dropdown(choices=names), known: names}

        gr.Timer(QUEUE_POLL_S).tick(new_queues, [known], [self.queue, known], **quiet)
        QueueApi(self.store, bar).wire()
