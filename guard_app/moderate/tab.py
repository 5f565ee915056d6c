"""The Moderate tab: compose a conversation, pick the policy, run both guards, read the verdict.

The Explore panel and the Review panel sit under the results; their own folders build them.
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import replace
from typing import Any

import gradio as gr

from guard.core.categories import choices
from guard_app.context import GPU, PRIVATE, PageContext
from guard_app.explore.tab import ExplorePanel
from guard_app.guarded import guarded
from guard_app.moderate import editor, logic, results
from guard_app.moderate import policy as policy_view
from guard_app.moderate.examples import EXAMPLES, example_turns


class ModerateTab:
    """Its components and states; `wire()` adds the listeners once the whole page exists."""

    def __init__(self, ctx: PageContext, demo: gr.Blocks) -> None:
        self.ctx, self.demo = ctx, demo
        ttl = ctx.ttl
        self.turns = gr.State([], time_to_live=ttl)
        self.pending = gr.State([], time_to_live=ttl)
        self.editing = gr.State(None, time_to_live=ttl)
        self.custom = gr.State([], time_to_live=ttl)
        self.last = gr.State(None, time_to_live=ttl)
        self.edit_outputs: list = []  # filled once the composer exists; the turn cards' Edit
        self.queue = None
        if ctx.store is not None:
            from guard_app.review.tab import QueuePanel

            self.queue = QueuePanel(ctx.store, ctx.bar)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                self._conversation(demo)
            with gr.Column(scale=2):
                self._policy()
        self._results()
        self.explore = ExplorePanel()
        info = ctx.info
        if info is not None and not info.capabilities.category_scores:
            gr.Markdown(f"*Per-category scores need the model's logits (the transformers "
                        f"engine); this server runs {info.engine}. Sweep and attribution work "
                        f"on any engine.*")
        self.review = None
        if ctx.store is not None:
            from guard_app.review.tab import ReviewPanel

            self.review = ReviewPanel(ctx.store, ctx.bar)
        else:
            gr.Markdown("*Review: labelling is off on this server (start with `--db PATH` to "
                        "save labelled examples).*")
        self.edit_outputs.extend([self.editing, self.text, self.pending, self.role,
                                  self.add_button, self.cancel_button])

    # ---- layout ----

    def _conversation(self, demo: gr.Blocks) -> None:
        gr.Markdown("### Conversation")
        with gr.Row():
            self.example_buttons = [gr.Button(e.name, size="sm", min_width=60) for e in EXAMPLES]
        gr.render(inputs=[self.turns, self.editing],
                  triggers=[self.turns.change, self.editing.change, demo.load])(self._show_turns)
        self.summary = gr.HTML(editor.summary_html([], [], None, self.ctx.max_images))
        with gr.Group():
            self._composer(demo)
        with gr.Row():
            self.add_button = gr.Button("Add turn", variant="secondary", elem_id="gl-add")
            self.cancel_button = gr.Button("Cancel edit", visible=False)
            self.clear_button = gr.Button("Clear conversation")

    def _composer(self, demo: gr.Blocks) -> None:
        ctx = self.ctx
        self.role = gr.Radio(["user", "assistant"], value="user", label="Role",
                             info="Roles alternate, starting with the user; the next role is "
                                  "picked for you.")
        self.text = gr.Textbox(label="Message", lines=3, elem_id="gl-text",
                               placeholder="Type the message. A turn with images needs text too.")
        # image_mode=None and preprocess=False below: Gradio hands over the uploaded file
        # undecoded, and the app reads its header first.
        self.upload = gr.Image(type="filepath", sources=["upload", "clipboard"], image_mode=None,
                               label=f"Attach images to this turn (upload, paste or drop; at "
                                     f"most {ctx.max_images} in the conversation)",
                               height=140, elem_id="gl-upload", visible=ctx.takes_images)
        if not ctx.takes_images:
            gr.Markdown(logic.images_off_note(ctx.info), elem_id="gl-images-off")
        gr.render(inputs=[self.pending],
                  triggers=[self.pending.change, demo.load])(self._show_pending)

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
        gr.Markdown("### Policy and run")
        self._policy_picker()
        self.categories = gr.CheckboxGroup(
            choices(family), value=list(ctx.codes), elem_id="gl-categories",
            label=f"{family.label} categories",
            info="Ticked categories go into the prompt; hover a category for its description.")
        with gr.Row():
            self.all_button = gr.Button("All", size="sm", min_width=50)
            self.none_button = gr.Button("None", size="sm", min_width=50)
            self.reset_button = gr.Button("Reset", size="sm", min_width=50)
        with gr.Accordion("What the categories mean", open=False):
            gr.HTML(results.category_legend_html(family))
        with gr.Accordion("Custom categories", open=False):
            self.custom_name = gr.Textbox(label="Name", max_lines=1)
            self.custom_description = gr.Textbox(label="Description", lines=2)
            with gr.Row():
                self.custom_add = gr.Button("Add category", size="sm")
                self.custom_clear = gr.Button("Clear custom", size="sm")
            self.custom_view = gr.HTML(results.custom_html([], family))
        self.slider = gr.Slider(0.0, 1.0, value=ctx.threshold, step=0.0001,
                                label="Llama Guard threshold",
                                info="unsafe when p_unsafe >= threshold; moving it re-applies it "
                                     "to the last run")
        self._prompt_guard_choice()
        self.run_button = gr.Button("Run both guards", variant="primary", elem_id="gl-run")
        with gr.Accordion("Save as policy", open=False, visible=self.ctx.store is not None):
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
            label="Prompt Guard reads messages as LlamaFirewall does", elem_id="gl-pg-firewall",
            visible=pg is not None,
            info="Collapse spacing tricks such as “I g n o r e” before scoring, as Meta's "
                 "production scanner does. Off: the model card's recipe, each message as "
                 "written.")

    def _results(self) -> None:
        gr.Markdown("### Results")
        self.results_view = gr.HTML(results.results_html(None, self.ctx.threshold),
                                    elem_id="gl-results")
        self.decision_view = gr.HTML("", elem_id="gl-decision-view")
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
        from guard_app.review.logic import stored_answer_html, stored_turns

        turns = stored_turns(payload["messages"])
        return {self.turns: turns, **self._composer_reset(turns), self.last: None,
                self.results_view: stored_answer_html(payload)}

    def _show_results(self, run, threshold_value):
        if not run:
            return results.results_html(None, threshold_value)
        return results.results_html(run.result, threshold_value, run.turns,
                                    pg_label=run.pg_label, notes=run.notes,
                                    family=self.ctx.family)

    # ---- listeners ----

    def wire(self) -> None:
        self._wire_composer()
        self._wire_policy()
        self._wire_run()
        ctx = self.ctx
        self.explore.wire(self.turns, self.categories, self.custom, self.slider,
                          functools.partial(logic.explore_inputs, ctx.guards,
                                            max_images=ctx.max_images),
                          ctx.slot, concurrency=ctx.concurrency, concurrency_id=GPU)
        if self.review is not None:
            self.review.wire(self.last, self.slider, ctx.max_images)
        if self.queue is not None:
            self.queue.wire(self.demo)
            self.listen_for_stored(self.queue.opened)

    def listen_for_stored(self, opened: gr.State) -> None:
        """Open what `opened` carries (guard_app.review.logic.stored_turns' input) here."""
        opened.change(self.open_stored, [opened],
                      [self.turns, self.last, self.results_view, *self.edit_outputs], **PRIVATE)

    def _wire_composer(self) -> None:
        ctx, turns, pending, editing = self.ctx, self.turns, self.pending, self.editing

        @guarded
        def on_add(turn_list, role_value, text_value, pending_list, editing_index):
            new = editor.commit_turn(turn_list, role_value, text_value, pending_list,
                                     editing=editing_index, max_images=ctx.max_images)
            return {turns: new, **self._composer_reset(new)}

        @guarded
        def on_upload(turn_list, pending_list, upload_value, editing_index):
            path = upload_value.get("path") if isinstance(upload_value, dict) else upload_value
            return {pending: editor.add_image(turn_list, pending_list, path,
                                              editing=editing_index, max_images=ctx.max_images)}

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
        self.add_button.click(on_add, [turns, self.role, self.text, pending, editing],
                              [turns, *self.edit_outputs], api_name="add_turn")
        self.cancel_button.click(self._composer_reset, [turns], self.edit_outputs,
                                 api_name="cancel_edit")
        self.clear_button.click(lambda: {turns: [], **self._composer_reset([]), self.last: None},
                                None, [turns, self.last, *self.edit_outputs],
                                api_name="clear_conversation")
        self.upload.upload(on_upload, [turns, pending, self.upload, editing], [pending],
                           api_name="attach_image", preprocess=False).then(
            lambda: None, None, [self.upload], **PRIVATE)

    def _wire_policy(self) -> None:
        family, codes, custom, view = self.ctx.family, self.ctx.codes, self.custom, self.custom_view

        @guarded
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
        self.custom_add.click(on_custom_add, [custom, self.custom_name, self.custom_description],
                              [custom, view, self.custom_name, self.custom_description],
                              api_name="add_custom_category")
        self.custom_clear.click(lambda: {custom: [], view: results.custom_html([], family)},
                                None, [custom, view], api_name="clear_custom_categories")
        self._wire_policy_picker()

    def _wire_policy_picker(self) -> None:
        ctx, family, book = self.ctx, self.ctx.family, self.ctx.policies
        controls = [self.categories, self.custom, self.custom_view, self.slider, self.pg_radio,
                    self.pg_firewall]

        @guarded
        def on_pick(choice):
            chosen = policy_view.picked(book, choice)
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

        self.policy.input(on_pick, [self.policy], controls, **PRIVATE)
        self.demo.load(on_pick, [self.policy], controls, **PRIVATE)
        if ctx.store is None:
            return

        @guarded
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

        self.policy_save.click(on_save, [*ctx.bar.inputs, self.policy_name, self.policy,
                                         self.categories, self.custom, self.slider,
                                         self.pg_radio, self.pg_firewall],
                               [self.policy, self.policy_status], api_name="save_policy")

    def _wire_run(self) -> None:
        ctx = self.ctx

        @guarded
        def on_run(turn_list, ticked, custom_list, threshold_value, pg_choice, firewall=False,
                   policy_choice=None):
            enforced, moved = policy_view.page_policy(
                policy_view.picked(ctx.policies, policy_choice), ctx.family, ticked, custom_list,
                threshold_value, pg_choice, bool(firewall))
            run = logic.run_guards(ctx.guards, ctx.prompt_guards, turn_list, ticked, custom_list,
                                   threshold_value, pg_choice, max_images=ctx.max_images,
                                   pg_preprocessing="llamafirewall" if firewall else "none")
            run = replace(run, result=enforced.apply(run.result),
                          notes=[*run.notes, *([moved] if moved else [])])
            for note in run.notes:
                gr.Warning(html.escape(note, quote=False))  # toasts render HTML
            out = {self.last: run, self.prompt_view: run.prompt, self.json_view: run.result,
                   self.results_view: self._show_results(run, threshold_value),
                   self.decision_view: policy_view.decision_html(run.result)}
            if self.review is not None:
                out.update(self.review.after_run(run, threshold_value))
            return out

        run_outputs = [self.last, self.prompt_view, self.json_view, self.results_view,
                       self.decision_view]
        if self.review is not None:
            run_outputs += self.review.outputs
        self.run_button.click(on_run, [self.turns, self.categories, self.custom, self.slider,
                                       self.pg_radio, self.pg_firewall, self.policy], run_outputs,
                              api_name="run", concurrency_limit=ctx.concurrency,
                              concurrency_id=GPU)
        def on_threshold(run, threshold_value):
            return {self.results_view: self._show_results(run, threshold_value),
                    self.decision_view: policy_view.decision_html(run and run.result,
                                                                  threshold_value)}

        self.slider.change(on_threshold, [self.last, self.slider],
                           [self.results_view, self.decision_view],
                           api_name="apply_threshold")
