"""Batch evaluation's policy panel: a typed threshold (Enter applies it), a threshold for a
target FPR or recall with what it costs, and a policy's category sweep over the dataset with
"save this variant as a policy"."""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

from guard_app import gpu, uploads
from guard_app import policy_picker as picker
from guard_app.evaluate import logic as view
from guard_app.evaluate import sweep
from guard_app.guarded import in_place, on_page_and_api

PRIVATE = {"api_visibility": "private"}


class PolicyPanel:
    """Built inside the EvalTab (`tab`), whose dataset, categories, threshold and run A it reads."""

    def __init__(self, tab: Any, book: Any) -> None:
        self.tab, self.book = tab, book
        gr.Markdown("### Thresholds and policies")
        with gr.Row():
            self.typed = gr.Textbox(label="Threshold (type it, press Enter)", max_lines=1,
                                    elem_id="gl-eval-typed",
                                    info="re-reads run A's stored scores at it, e.g. 0.003")
            self.target = gr.Radio([("target FPR (at most)", "fpr"),
                                    ("target recall (at least)", "recall")], value="fpr",
                                   label="Suggest a threshold for")
            self.target_value = gr.Number(0.05, label="target", elem_id="gl-eval-target")
            self.suggest = gr.Button("Suggest", size="sm", elem_id="gl-eval-suggest")
        self.suggestion = gr.HTML(elem_id="gl-eval-suggestion-view")
        with gr.Row():
            # A custom value: a policy saved after the page was built (or NAME@VERSION) is
            # looked up in the store, which refuses an unknown one by name.
            self.policy = gr.Dropdown(picker.choices(book), value=picker.default_choice(book),
                                      label="Policy", elem_id="gl-eval-policy",
                                      allow_custom_value=True,
                                      info="picking one sets the categories and threshold; "
                                           "(the settings below): the tab's own")
            self.leave_out = gr.Checkbox(True, label="each enabled category left out")
            self.alone = gr.Checkbox(False, label="each category alone")
            self.sweep = gr.Button("Sweep categories over this dataset", variant="secondary",
                                   elem_id="gl-eval-sweep")
        self.sweep_status = gr.HTML(elem_id="gl-eval-sweep-status")
        self.table = gr.Dataframe(headers=sweep.SWEEP_HEADERS, datatype="str",
                                  interactive=False, elem_id="gl-eval-sweep-table",
                                  label="The policy and its variants (each a stored run)")
        self.variants = gr.State(None)
        with gr.Row():
            self.variant = gr.Dropdown([], label="Variant", elem_id="gl-eval-variant",
                                       allow_custom_value=True)
            self.variant_name = gr.Textbox(label="Save it as (policy name)", max_lines=1,
                                           elem_id="gl-eval-variant-name")
            self.save = gr.Button("Save this variant as a policy", size="sm",
                                  elem_id="gl-eval-save-variant")
        self.saved = gr.HTML(elem_id="gl-eval-saved")

    def wire(self, guards: Any, who: list[Any], excluded_of: Any, *, judge: Any,
             concurrency: int, concurrency_id: str) -> None:
        tab, shown = self.tab, self.tab.shown

        def apply_typed(name, typed_value, show, code, other, session=None, typed=None,
                        profile: gr.OAuthProfile | None = None):
            threshold = sweep.typed_threshold(typed_value)
            if not name:
                return {**{o: gr.skip() for o in shown}, tab.threshold: threshold}
            return tab.show_run(name, threshold, show, code, other, session, typed, profile)

        self.typed.submit(in_place(apply_typed, shown),
                          [tab.run_a, self.typed, tab.show, tab.category, tab.run_b, *who],
                          shown, **PRIVATE)

        def suggest(name, target, value, session=None, typed=None,
                    profile: gr.OAuthProfile | None = None):
            tab.reviewer("read evaluation runs", session, typed, profile)
            found = sweep.stored_suggestion(tab.runs, name, target, value)
            return {self.suggestion: sweep.suggestion_html(found, name),
                    self.typed: sweep.show_threshold(found.threshold)}

        on_page_and_api(self.suggest.click, suggest,
                        [tab.run_a, self.target, self.target_value, *who],
                        [self.suggestion, self.typed], api_name="suggest_threshold")
        self._wire_pick()
        self._wire_sweep(guards, who, excluded_of, judge=judge, concurrency=concurrency,
                         concurrency_id=concurrency_id)

    def _wire_pick(self) -> None:
        tab = self.tab

        def on_pick(choice):
            chosen = picker.picked(self.book, choice)
            if chosen is None:
                return {tab.categories: gr.skip()}
            shown = picker.page_settings(chosen, tab.family)
            return {tab.categories: shown["ticked"], tab.threshold: shown["threshold"]}

        self.policy.input(in_place(on_pick, [tab.categories, tab.threshold]), [self.policy],
                          [tab.categories, tab.threshold], **PRIVATE)

    def _wire_sweep(self, guards: Any, who: list[Any], excluded_of: Any, *, judge: Any,
                    concurrency: int, concurrency_id: str) -> None:
        tab, book = self.tab, self.book

        def run_sweep(source, path, fmt, name, limit, batch_size, ticked, threshold, choice,
                      leave_out, alone, session=None, typed=None,
                      profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                      progress=gr.Progress()):  # noqa: B008 (gradio finds the bar this way)
            tab.reviewer("run evaluations", session, typed, profile)
            if (source or view.UPLOAD) == view.UPLOAD and path:
                uploads.check_owned(path, request)
                uploads.keep(path)
            dataset = view.pick_dataset(source or view.UPLOAD, path, fmt, tab.builtins,
                                        store=tab.store, family=tab.family,
                                        hidden=tab.blind(source, session, typed, profile))
            excluded, threshold = excluded_of(ticked), view.parse_threshold(threshold)
            base = sweep.base_policy(sweep.chosen_policy(book, choice), excluded, threshold,
                                     tab.family)
            used = sweep.policy_guards(guards, gpu.prompt_guard_choices(guards), base)
            started = time.perf_counter()
            table, found = sweep.run_sweep(
                dataset, used, tab.runs, base, name=(name or "").strip() or None,
                leave_out=bool(leave_out), alone=bool(alone),
                batch_size=view.parse_batch_size(batch_size), limit=view.parse_limit(limit),
                progress=lambda done, total: progress((done, total), desc="variant rows"),
                judge=judge)
            said = (f"{len(table)} runs ({base.recorded or 'the tab settings, no policy'}) in "
                    f"{time.perf_counter() - started:.1f} s; each is stored under its name and "
                    f"resumes when swept again. {sweep.tab_note(base, excluded, threshold)}")
            choices = sweep.variant_choices(table)
            return {self.sweep_status: html.escape(said), self.table: sweep.sweep_rows(table),
                    self.variants: sweep.variant_policies(found),
                    self.variant: gr.Dropdown(choices=choices,
                                              value=choices[0] if choices else None),
                    tab.run_a: gr.Dropdown(choices=view.run_names(tab.runs), value=table[0].run)}

        on_page_and_api(
            self.sweep.click, run_sweep,
            [tab.source, tab.file, tab.format, tab.name, tab.limit, tab.batch_size,
             tab.categories, tab.threshold, self.policy, self.leave_out, self.alone, *who],
            [self.sweep_status, self.table, self.variants, self.variant, tab.run_a],
            api_name="sweep_dataset", concurrency_limit=concurrency,
            concurrency_id=concurrency_id)

        def save_variant(saved, variant, name, session=None, typed=None,
                         profile: gr.OAuthProfile | None = None):
            reviewer = tab.bar.who("save policies", session, typed, profile) \
                if tab.bar is not None else ""
            result = sweep.save_variant(book, saved, variant, name, by=reviewer or "")
            label = result.policy.label
            said = f"Saved {label}." if result.new else f"Unchanged: {label} already says this."
            return {self.saved: html.escape(said),
                    self.policy: gr.Dropdown(choices=picker.choices(book))}

        on_page_and_api(self.save.click, save_variant,
                        [self.variants, self.variant, self.variant_name, *who],
                        [self.saved, self.policy], api_name="save_variant")
