"""The Moderate tab: compose a conversation, run both guards, read the verdict, pick the policy.

The composer and the verdict sit side by side (stacked on a phone, where the verdict is
scrolled into view after a run); the categories and the rest of the policy follow. page.py
composes what other folders build around it (the queue above, the Review panel under the
verdict through `under_verdict`, Explore below): this folder imports no other feature folder.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import gradio as gr

from guard.core.categories import choices
from guard.core.errors import GuardError
from guard_app import policy_picker as policy_view
from guard_app import run as page_run
from guard_app.context import GPU, PRIVATE, PageContext
from guard_app.conversation import stored_turns
from guard_app.guarded import guarded, in_place
from guard_app.moderate import editor, kept, logic, results
from guard_app.moderate.examples import EXAMPLES, example_turns
from guard_app.result_html import stored_answer_html

STORAGE_KEY = "guard_lab_conversation"
QUIET = {**PRIVATE, "show_progress": "hidden"}
# After a run: bring the verdict into view when it is not (a phone, a long conversation).
SCROLL_TO_VERDICT = """() => {
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const el = document.querySelector('#gl-results');
    if (!el) return;
    const r = el.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight * 0.6) el.scrollIntoView({block: 'start'});
  }));
}"""


def page_and_api(trigger: Callable, fn: Callable, inputs: Sequence[Any], outputs: Sequence[Any],
                 *, api_name: str, page: tuple[Callable, Sequence, Sequence] | None = None,
                 **options: Any) -> Any:
    """The page's listener, whose refusals are warnings that leave every field as it was (a
    raised gr.Error marks each output "Error" and locks it), and the named endpoint, whose
    refusals are raised to API clients as before. `page` is (fn, inputs, outputs) when the
    page's listener does more than the endpoint. Returns the page's event, to chain on."""
    page_fn, page_inputs, page_outputs = page or (fn, inputs, outputs)
    page_outputs = list(page_outputs)
    event = trigger(in_place(page_fn, page_outputs), list(page_inputs), page_outputs,
                    api_name=f"{api_name}_on_page", api_visibility="private", **options)
    gr.Button(visible=False, render=True).click(guarded(fn), list(inputs), outputs,
                                                api_name=api_name, **options)
    return event


class ModerateTab:
    """Its components and states; `wire()` adds the listeners once the whole page exists.

    `under_verdict` builds what sits under the verdict (page.py: the Review panel); its
    result is `self.under_verdict`. `on_ran(fn, outputs)` adds `fn(run, threshold) -> dict`
    to every run's outputs.
    """

    def __init__(self, ctx: PageContext, demo: gr.Blocks,
                 under_verdict: Callable[[], Any] | None = None) -> None:
        self.ctx, self.demo = ctx, demo
        ttl = ctx.ttl
        self.turns = gr.State([], time_to_live=ttl)
        self.pending = gr.State([], time_to_live=ttl)
        self.editing = gr.State(None, time_to_live=ttl)
        self.custom = gr.State([], time_to_live=ttl)
        self.last = gr.State(None, time_to_live=ttl)
        self.page_now = gr.State("", time_to_live=ttl)  # the page's run.fingerprint now
        self.kept = gr.BrowserState(None, storage_key=STORAGE_KEY)
        self.ran: list[tuple[Callable, list]] = []
        self.edit_outputs: list = []  # filled once the composer exists; the turn cards' Edit
        with gr.Row(equal_height=False, elem_id="gl-workspace"):
            with gr.Column(scale=3, min_width=300):
                self._conversation(demo)
            with gr.Column(scale=2, min_width=300, elem_id="gl-result-column"):
                self._results()
                self.under_verdict = under_verdict() if under_verdict else None
        self._policy()
        self._details()
        self.edit_outputs.extend([self.editing, self.text, self.pending, self.role,
                                  self.add_button, self.cancel_button])

    def on_ran(self, fn: Callable, outputs: Sequence[Any]) -> None:
        self.ran.append((fn, list(outputs)))

    # ---- layout ----

    def _conversation(self, demo: gr.Blocks) -> None:
        gr.render(inputs=[self.turns, self.editing],
                  triggers=[self.turns.change, self.editing.change, demo.load])(self._show_turns)
        self.summary = gr.HTML(editor.summary_html([], [], None, self.ctx.max_images))
        with gr.Group():
            self._composer(demo)
        self.composer_note = gr.HTML("", elem_id="gl-composer-note")
        with gr.Row():
            self.add_button = gr.Button("Add turn", variant="secondary", elem_id="gl-add",
                                        min_width=90)
            self.run_button = gr.Button("Run both guards", variant="primary", elem_id="gl-run",
                                        min_width=120)
            self.cancel_button = gr.Button("Cancel edit", visible=False, min_width=90)
            self.clear_button = gr.Button("Clear conversation", min_width=90,
                                          elem_id="gl-clear")
        gr.Markdown("Or load an example:", elem_classes=["gl-muted"])
        with gr.Row():
            self.example_buttons = [gr.Button(e.name, size="sm", min_width=60) for e in EXAMPLES]
        self.kept_note = gr.HTML("", elem_id="gl-kept-note")
        self._upload()

    def _composer(self, demo: gr.Blocks) -> None:
        self.role = gr.Radio(["user", "assistant"], value="user", label="Role",
                             elem_id="gl-role", container=False)
        self.text = gr.Textbox(label="Message", lines=3, max_lines=12, elem_id="gl-text",
                               placeholder="Type the message. Enter adds the turn, Shift+Enter "
                                           "a new line. Roles alternate, starting with the "
                                           "user; a turn with images needs text too.")
        gr.render(inputs=[self.pending],
                  triggers=[self.pending.change, demo.load])(self._show_pending)

    def _upload(self) -> None:
        ctx = self.ctx
        # image_mode=None and preprocess=False below: Gradio hands over the uploaded file
        # undecoded, and the app reads its header first.
        self.upload = gr.Image(type="filepath", sources=["upload", "clipboard"], image_mode=None,
                               label=f"Attach images to the turn you are writing (upload, "
                                     f"paste or drop; at most {ctx.max_images} in the "
                                     "conversation)",
                               height=120, elem_id="gl-upload", visible=ctx.takes_images)
        if not ctx.takes_images:
            gr.Markdown(logic.images_off_note(ctx.info), elem_id="gl-images-off")

    def _show_turns(self, turn_list, editing_index):
        if not turn_list:
            gr.HTML('<div class="gl-empty">No turns yet. Write the user\'s message below and '
                    'press <b>Add turn</b>, or load an example.</div>')
            return
        for i, turn in enumerate(turn_list):
            classes = ["gl-turn"] + (["gl-editing"] if i == editing_index else [])
            with gr.Group(elem_classes=classes):
                gr.HTML(editor.turn_html(i, turn, i == len(turn_list) - 1),
                        elem_classes=["gl-turn-body"])
                if turn["images"] and i != editing_index:
                    with gr.Row():
                        for j, path in enumerate(turn["images"]):
                            self._thumb(path, functools.partial(self._remove_image, i, j),
                                        self.turns, remove_class=True)
                with gr.Row():
                    gr.Button("Edit", size="sm", min_width=60).click(
                        functools.partial(self._start_edit, i), [self.turns], self.edit_outputs,
                        **PRIVATE)
                    gr.Button("Delete", size="sm", min_width=60, variant="stop").click(
                        functools.partial(self._remove_turn, i), [self.turns, self.editing],
                        [self.turns, self.editing], **PRIVATE)

    def _show_pending(self, paths):
        if not paths:
            return
        with gr.Row():
            for j, path in enumerate(paths):
                self._thumb(path, functools.partial(self._remove_pending, j), self.pending)

    @staticmethod
    def _thumb(path: str, remove: Any, state: gr.State, remove_class: bool = False) -> None:
        with gr.Column(min_width=90, scale=0, elem_classes=["gl-thumb"]):
            gr.Image(path, show_label=False, height=80, width=80, interactive=False, buttons=[],
                     container=False)
            gr.Button("Remove", size="sm",
                      elem_classes=["gl-remove"] if remove_class else None).click(
                remove, [state], [state], **PRIVATE)

    def _policy(self) -> None:
        ctx, family = self.ctx, self.ctx.family
        gr.Markdown("### Policy: what counts as unsafe")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                self.categories = gr.CheckboxGroup(
                    choices(family), value=list(ctx.codes), elem_id="gl-categories",
                    label=f"{family.label} categories",
                    info="Ticked categories go into the prompt. What each one means is listed "
                         "under 'What the categories mean'.")
                with gr.Row():
                    self.all_button = gr.Button("All", size="sm", min_width=50)
                    self.none_button = gr.Button("None", size="sm", min_width=50)
                    self.reset_button = gr.Button("Reset", size="sm", min_width=50)
                with gr.Accordion("What the categories mean", open=False,
                                  elem_id="gl-legend"):
                    gr.HTML(results.category_legend_html(family))
            with gr.Column(scale=2, min_width=300):
                self._policy_picker()
                self.slider = gr.Slider(0.0, 1.0, value=ctx.threshold, step=0.0001,
                                        label="Llama Guard threshold",
                                        info="unsafe when the harm score (p_unsafe) is at least "
                                             "this; moving it re-applies it to the last run")
                self._prompt_guard_choice()
                self._custom()

    def _custom(self) -> None:
        family = self.ctx.family
        with gr.Accordion("Custom categories", open=False):
            self.custom_name = gr.Textbox(label="Name", max_lines=1)
            self.custom_description = gr.Textbox(label="Description", lines=2)
            with gr.Row():
                self.custom_add = gr.Button("Add category", size="sm")
                self.custom_clear = gr.Button("Clear custom", size="sm")
            self.custom_view = gr.HTML(results.custom_html([], family))
        with gr.Accordion("Save as policy", open=False, visible=self.ctx.store is not None,
                          elem_id="gl-save-policy") as self.save_policy_box:
            self.policy_name = gr.Textbox(label="Policy name", max_lines=1,
                                          elem_id="gl-policy-name",
                                          info="Letters, digits, '.', '_' or '-'. Saving a "
                                               "name again makes its next version.")
            self.policy_save = gr.Button("Save", size="sm", elem_id="gl-policy-save")
            self.policy_status = gr.HTML("")

    def _policy_picker(self) -> None:
        book = self.ctx.policies
        self.policy = gr.Dropdown(
            policy_view.choices(book), value=policy_view.default_choice(book), label="Policy",
            elem_id="gl-policy",
            info="A saved policy sets the categories, threshold and Prompt Guard below, and a "
                 "run records it (name@version) while the page still says what it says.")

    def _prompt_guard_choice(self) -> None:
        ctx, pg = self.ctx, self.ctx.prompt_guards
        self.pg_radio = gr.Radio(
            pg.choices if pg else [], value=ctx.default_prompt_guard,
            label="Prompt Guard 2 model", visible=pg is not None,
            info="In test mode both choices run the same tiny model." if ctx.tiny
            else "86M is multilingual; 22M is faster, English-centred.")
        self.pg_firewall = gr.Checkbox(
            ctx.prompt_guard_preprocessing == "llamafirewall",
            label="Undo spacing tricks before Prompt Guard scores", elem_id="gl-pg-firewall",
            visible=pg is not None,
            info="Collapse text such as “I g n o r e” first, as Meta's production scanner "
                 "(LlamaFirewall) does. Off: the model card's recipe, each message as written.")

    def _results(self) -> None:
        gr.Markdown("### Result", elem_id="gl-result-title")
        self.results_view = gr.HTML(results.results_html(None, self.ctx.threshold),
                                    elem_id="gl-results")
        self.decision_view = gr.HTML("", elem_id="gl-decision-view")

    def _details(self) -> None:
        with gr.Accordion("What the two guards judge", open=False):
            gr.Markdown(results.what_they_judge(self.ctx.family))
        with gr.Accordion("The prompt Llama Guard saw", open=False):
            self.prompt_view = gr.Code(label="Rendered prompt", language=None, lines=12,
                                       interactive=False, wrap_lines=True)
        with gr.Accordion("Raw result (JSON)", open=False):
            self.json_view = gr.JSON()

    # ---- handlers: each returns {component: value} ----

    def _refresh(self, turn_list, pending_list, editing_index):
        images = editor.has_images(turn_list, pending_list)
        return {self.summary: editor.summary_html(turn_list, pending_list, editing_index,
                                                  self.ctx.max_images),
                self.categories: gr.CheckboxGroup(choices=choices(self.ctx.family,
                                                                  images=images))}

    def _composer_reset(self, turn_list):
        return {self.editing: None, self.text: "", self.pending: [],
                self.role: gr.Radio(value=editor.next_role(turn_list), interactive=True),
                self.add_button: gr.Button("Add turn"),
                self.cancel_button: gr.Button(visible=False)}

    def _start_edit(self, index, turn_list):
        turn = turn_list[index]
        return {self.editing: index, self.text: turn["text"], self.pending: list(turn["images"]),
                self.role: gr.Radio(value=turn["role"], interactive=False),
                self.add_button: gr.Button(f"Save turn {index + 1}"),
                self.cancel_button: gr.Button(visible=True)}

    def _remove_turn(self, index, turn_list, editing_index):
        return {self.turns: editor.delete_turn(turn_list, index),
                self.editing: None if editing_index == index else editing_index}

    def _remove_image(self, turn_index, image_index, turn_list):
        return {self.turns: editor.remove_image(turn_list, turn_index, image_index)}

    def _remove_pending(self, index, pending_list):
        return {self.pending: [p for j, p in enumerate(pending_list) if j != index]}

    def open_stored(self, payload):
        """Load a stored case (a queue item, a run's row) with the model's stored answer; the
        guards run again only when asked (Run both guards)."""
        if not payload:
            return {}
        turns = stored_turns(payload["messages"])
        return {self.turns: turns, **self._composer_reset(turns), self.last: None,
                self.results_view: stored_answer_html(payload)}

    def _show_results(self, run, threshold_value, stale=False):
        if not run:
            return results.results_html(None, threshold_value)
        return results.results_html(run.result, threshold_value, run.turns,
                                    pg_label=run.pg_label, notes=run.notes,
                                    family=self.ctx.family, stale=stale)

    # ---- listeners ----

    def wire(self) -> None:
        self._wire_composer()
        self._wire_upload()
        self._wire_policy()
        self._wire_run()
        self._wire_kept()

    def listen_for_stored(self, opened: gr.State) -> None:
        """Open what `opened` carries (guard_app.conversation.stored_turns' input) here."""
        opened.change(self.open_stored, [opened],
                      [self.turns, self.last, self.results_view, *self.edit_outputs], **PRIVATE)

    def _wire_composer(self) -> None:
        ctx, turns, pending, editing = self.ctx, self.turns, self.pending, self.editing

        def on_add(turn_list, role_value, text_value, pending_list, editing_index):
            new = editor.commit_turn(turn_list, role_value, text_value, pending_list,
                                     editing=editing_index, max_images=ctx.max_images)
            return {turns: new, **self._composer_reset(new)}

        def load_example(name):
            new = example_turns(name, ctx.swatches)
            return {turns: new, **self._composer_reset(new), self.last: None,
                    self.results_view: results.results_html(None, ctx.threshold)}

        for button, example in zip(self.example_buttons, EXAMPLES, strict=True):
            slug = re.sub(r"\W+", "_", example.name.lower())
            button.click(functools.partial(load_example, example.name), None,
                         [turns, self.last, self.results_view, *self.edit_outputs],
                         api_name=f"example_{slug}")
        for state in (turns, pending, editing):
            state.change(self._refresh, [turns, pending, editing],
                         [self.summary, self.categories], **PRIVATE)
        def on_add_here(turn_list, role_value, text_value, pending_list, editing_index, note):
            out = on_add(turn_list, role_value, text_value, pending_list, editing_index)
            if note:  # an image was refused meanwhile: the turn goes in without it, said
                gr.Warning("The turn was added without the image that was refused.")
            return {**out, self.composer_note: ""}

        inputs = [turns, self.role, self.text, pending, editing]
        page_and_api(self.add_button.click, on_add, inputs, [turns, *self.edit_outputs],
                     api_name="add_turn",
                     page=(on_add_here, [*inputs, self.composer_note],
                           [turns, self.composer_note, *self.edit_outputs]))
        self.cancel_button.click(self._composer_reset, [turns], self.edit_outputs,
                                 api_name="cancel_edit")
        self.clear_button.click(
            lambda: {turns: [], **self._composer_reset([]), self.last: None,
                     self.results_view: results.results_html(None, ctx.threshold),
                     self.composer_note: ""},
            None, [turns, self.last, self.results_view, self.composer_note, *self.edit_outputs],
            api_name="clear_conversation")

    def _wire_upload(self) -> None:
        ctx, turns, pending, editing = self.ctx, self.turns, self.pending, self.editing

        def attach(turn_list, pending_list, upload_value, editing_index):
            path = upload_value.get("path") if isinstance(upload_value, dict) else upload_value
            return {pending: editor.add_image(turn_list, pending_list, path,
                                              editing=editing_index, max_images=ctx.max_images)}

        @guarded
        def on_page(turn_list, pending_list, upload_value, editing_index):
            """A refused file: said beside the composer (and in a toast), until the next turn."""
            try:
                return {**attach(turn_list, pending_list, upload_value, editing_index),
                        self.composer_note: ""}
            except GuardError as exc:
                gr.Warning(html.escape(str(exc), quote=False))
                return {pending: gr.skip(),
                        self.composer_note: results.refused_image_html(str(exc))}

        inputs = [turns, pending, self.upload, editing]
        self.upload.upload(on_page, inputs, [pending, self.composer_note],
                           api_name="attach_image_on_page", api_visibility="private",
                           preprocess=False).then(lambda: None, None, [self.upload], **QUIET)
        gr.Button(visible=False, render=True).click(guarded(attach), inputs, [pending],
                                                    api_name="attach_image", preprocess=False)

    def _wire_policy(self) -> None:
        family, codes, custom, view = self.ctx.family, self.ctx.codes, self.custom, self.custom_view

        def on_custom_add(custom_list, name, description):
            new = logic.add_custom(custom_list, name, description)
            return {custom: new, view: results.custom_html(new, family), self.custom_name: "",
                    self.custom_description: ""}

        self.all_button.click(lambda: list(codes), None, [self.categories],
                              api_name="categories_all")
        self.none_button.click(lambda: [], None, [self.categories], api_name="categories_none")
        self.reset_button.click(lambda: {self.categories: list(codes), custom: [],
                                         view: results.custom_html([], family)},
                                None, [self.categories, custom, view], api_name="categories_reset")
        page_and_api(self.custom_add.click, on_custom_add,
                     [custom, self.custom_name, self.custom_description],
                     [custom, view, self.custom_name, self.custom_description],
                     api_name="add_custom_category")
        self.custom_clear.click(lambda: {custom: [], view: results.custom_html([], family)},
                                None, [custom, view], api_name="clear_custom_categories")
        self._wire_policy_save()

    def _pick(self, choice):
        ctx, family = self.ctx, self.ctx.family
        chosen = policy_view.picked(ctx.policies, choice)
        if chosen is None:
            return {self.categories: gr.skip()}  # the page's own settings stay
        shown = policy_view.page_settings(chosen, family)
        out = {self.categories: shown["ticked"], self.custom: shown["custom"],
               self.custom_view: results.custom_html(shown["custom"], family),
               self.slider: shown["threshold"], self.pg_firewall: shown["firewall"]}
        if shown["prompt_guard"] is not None and ctx.prompt_guards is not None and \
                shown["prompt_guard"] in ctx.prompt_guards.sources:
            out[self.pg_radio] = shown["prompt_guard"]
        return out

    @property
    def settings(self) -> list:
        """The controls a run reads besides the conversation, as a reload restores them."""
        return [self.categories, self.custom, self.slider, self.policy, self.pg_radio,
                self.pg_firewall]

    def _wire_policy_save(self) -> None:
        ctx, family, book = self.ctx, self.ctx.family, self.ctx.policies
        self.policy.input(guarded(self._pick), [self.policy],
                          [self.categories, self.custom, self.custom_view, self.slider,
                           self.pg_radio, self.pg_firewall], **PRIVATE)
        if ctx.store is None:
            return

        def on_save(session, typed, name, choice, ticked, custom_list, threshold_value,
                    pg_choice, firewall, profile: gr.OAuthProfile | None = None):
            reviewer = ctx.bar.who("save policies", session, typed, profile)
            policy = policy_view.new_policy(name, policy_view.picked(book, choice), family,
                                            ticked, custom_list, threshold_value, pg_choice,
                                            firewall)
            saved = book.save(policy, by=reviewer or "")
            label = saved.policy.label
            said = f"Saved {label}." if saved.new else f"Unchanged: {label} already says this."
            return {self.policy: gr.Dropdown(choices=policy_view.choices(book), value=label),
                    self.policy_status: f'<div class="gl-note" id="gl-policy-status">'
                                        f'{html.escape(said)}</div>'}

        page_and_api(self.policy_save.click, on_save,
                     [*ctx.bar.inputs, self.policy_name, self.policy, self.categories,
                      self.custom, self.slider, self.pg_radio, self.pg_firewall],
                     [self.policy, self.policy_status], api_name="save_policy")

    def _wire_run(self) -> None:
        ctx = self.ctx

        def on_run(turn_list, ticked, custom_list, threshold_value, pg_choice, firewall=False,
                   policy_choice=None):
            enforced, moved = policy_view.page_policy(
                policy_view.picked(ctx.policies, policy_choice), ctx.family, ticked, custom_list,
                threshold_value, pg_choice, bool(firewall))
            run = logic.run_guards(ctx.guards, ctx.prompt_guards, turn_list, ticked, custom_list,
                                   threshold_value, pg_choice, max_images=ctx.max_images,
                                   pg_preprocessing="llamafirewall" if firewall else "none")
            now = page_run.fingerprint(turn_list, ticked, custom_list, pg_choice, bool(firewall),
                                       policy_choice)
            run = replace(run, result=enforced.apply(run.result),
                          notes=[*run.notes, *([moved] if moved else [])], fingerprint=now)
            for note in run.notes:
                gr.Warning(html.escape(note, quote=False))  # toasts render HTML
            out = {self.last: run, self.page_now: now, self.prompt_view: run.prompt,
                   self.json_view: page_run.shown_result(run.result),
                   self.results_view: self._show_results(run, threshold_value),
                   self.decision_view: policy_view.decision_html(run.result)}
            for fn, _ in self.ran:
                out.update(fn(run, threshold_value))
            return out

        run_outputs = [self.last, self.page_now, self.prompt_view, self.json_view,
                       self.results_view, self.decision_view]
        for _, outputs in self.ran:
            run_outputs += outputs
        ran = page_and_api(self.run_button.click, on_run,
                           [self.turns, self.categories, self.custom, self.slider, self.pg_radio,
                            self.pg_firewall, self.policy], run_outputs,
                           api_name="run", concurrency_limit=ctx.concurrency,
                           concurrency_id=GPU)
        ran.then(None, None, None, js=SCROLL_TO_VERDICT, **QUIET)

        def on_threshold(run, threshold_value, now):
            stale = page_run.out_of_date(run, now)
            return {self.results_view: self._show_results(run, threshold_value, stale),
                    self.decision_view: policy_view.decision_html(run and run.result,
                                                                  threshold_value)}

        self.slider.change(on_threshold, [self.last, self.slider, self.page_now],
                           [self.results_view, self.decision_view],
                           api_name="apply_threshold")

    def _wire_kept(self) -> None:
        """Mark a shown result out of date when what it ran on changes, and keep the
        conversation and the settings in the browser across a reload."""
        settings = self.settings
        marked = [self.turns, self.categories, self.custom, self.pg_radio, self.pg_firewall,
                  self.policy]

        def on_change(turn_list, ticked, custom_list, threshold_value, policy_choice,
                      pg_choice, firewall, run, before):
            now = page_run.fingerprint(turn_list, ticked, custom_list, pg_choice,
                                       bool(firewall), policy_choice)
            out = {self.page_now: now, self.results_view: gr.skip()}
            if run is not None and page_run.out_of_date(run, now) != \
                    page_run.out_of_date(run, before):
                out[self.results_view] = self._show_results(
                    run, threshold_value, page_run.out_of_date(run, now))
            copy, said = kept.keep(turn_list, {
                "ticked": list(ticked or []), "custom": list(custom_list or []),
                "threshold": threshold_value, "policy": policy_choice, "pg": pg_choice,
                "firewall": bool(firewall)})
            out[self.kept] = copy
            out[self.kept_note] = results.kept_note_html(said)
            return out

        # No model work, so outside the queue: it never waits behind a run, nor a run behind it.
        gr.on([c.change for c in marked] + [self.slider.release], on_change,
              [self.turns, *settings, self.last, self.page_now],
              [self.page_now, self.results_view, self.kept, self.kept_note], **QUIET,
              queue=False)

        @guarded
        def on_load(copy, choice):
            out = self._pick(choice)
            turns, saved, said = kept.restore(copy)
            if not turns and not saved:
                return out
            if saved:
                out.update(self._restored_settings(saved))
            out.update({self.turns: turns, **self._composer_reset(turns),
                        self.kept_note: results.kept_note_html(said)})
            return out

        self.demo.load(on_load, [self.kept, self.policy],
                       [*settings, self.custom_view, self.turns, self.kept_note,
                        *self.edit_outputs], **QUIET)

    def _restored_settings(self, saved: dict) -> dict:
        ctx, family = self.ctx, self.ctx.family
        codes = set(ctx.codes)
        out = {self.categories: [c for c in saved.get("ticked", []) if c in codes],
               self.custom: list(saved.get("custom") or []),
               self.custom_view: results.custom_html(list(saved.get("custom") or []), family),
               self.pg_firewall: bool(saved.get("firewall"))}
        threshold = saved.get("threshold")
        if isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0:
            out[self.slider] = float(threshold)
        if saved.get("policy") in policy_view.choices(ctx.policies):
            out[self.policy] = saved["policy"]
        if ctx.prompt_guards is not None and saved.get("pg") in ctx.prompt_guards.sources:
            out[self.pg_radio] = saved["pg"]
        return out
