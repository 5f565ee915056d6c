"""The Batch evaluation tab: gradio components over logic.py and the stored runs.

Every refusal (no dataset, a bad number, an unknown run, an empty selection) is a toast that
leaves the outputs as they were; through the API the same refusal is raised
(`guarded.on_page_and_api`). `self.opened` holds the row last opened from the rows table, as
`logic.open_row` gives it, for the Moderate tab to load.
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from guard.core.categories import Family, choices
from guard.core.policy import ad_hoc
from guard.engines.service import Guards
from guard.eval import FORMATS
from guard_app import gpu, uploads
from guard_app import policy_picker as picker
from guard_app.evaluate import logic as view
from guard_app.evaluate import prompt_guard_runs, sweep
from guard_app.evaluate.policy_tab import PolicyPanel
from guard_app.guarded import guarded, in_place, on_page_and_api
from labels.errors import LabelsError
from labels.queues import blind_examples
from labels.runs import Runs

PRIVATE = {"api_visibility": "private"}
INTRO = (
    "Run Llama Guard (and Prompt Guard) over a labelled dataset and read model-card metrics: "
    "precision, recall, F1, false positive rate and the area under the precision-recall curve. "
    "**CSV / JSONL** files need a `prompt` (or `text`, `input`) column; optional `response` "
    "(then the response is judged), `label` (safe/unsafe, 0/1), `categories` (e.g. `S1,S10`), "
    "`attack` (is the prompt a jailbreak or prompt injection: true/false, 1/0, malicious/benign, "
    "jailbreak/injection; Prompt Guard's ground truth, apart from `label`) and `id`. With an "
    "`attack` column the report adds Prompt Guard's figures as its model card gives them (AUC, "
    "recall at 1% FPR, AUPRC, precision/recall/FPR at its threshold, thresholds for a target "
    "FPR), per message and per 512-token window. Every run is stored under its name in the "
    "labels database.")
KEPT_KEY = "guard-lab-batch-evaluation-form"  # localStorage, encrypted by Gradio
FILE_NOTE = ("<small>This form is kept in your browser across a reload (the dataset choice, "
             "limit, policy, categories, thresholds and targets); an uploaded file is not: "
             "upload it again after a reload.</small>")
OPENED = ("Row '{row}' of run '{run}' is open in the Moderate tab ({verdict}, p_unsafe "
          "{p} at threshold {t:g}).")


def _text(message: str) -> str:
    """Text for a gr.HTML output: run and queue names are visitors'."""
    return html.escape(message, quote=False)


def _with_run(fn: Callable, outputs: Sequence[Any]) -> Callable:
    """For events that fire while no run is picked (a slider moved first): do nothing then."""

    @functools.wraps(fn)
    def wrapper(name, *args, **kwargs):
        if not name:
            return {output: gr.skip() for output in outputs}
        return fn(name, *args, **kwargs)
    return wrapper


class EvalTab:
    """`bar` is the page's ReviewerBar: with reviewer accounts, only reviewers run and read runs."""

    def __init__(self, store: Any, *, builtins: Mapping[str, tuple[str, Path, str]],
                 category_choices: list[tuple[str, str]], codes: Sequence[str],
                 threshold: float, family: Family = Family.LLAMA_GUARD_4, bar: Any = None,
                 policies: Any = None):
        self.store = store
        self.runs = Runs(store)
        self.bar = bar
        self.family = family
        self.model = ""  # the loaded Llama Guard's name (wire): its runs take `family`
        self.builtins = dict(builtins)
        self.codes = tuple(codes)
        default = getattr(policies, "default", None)
        if default is not None:  # the form starts at the default policy the picker shows
            shown = picker.page_settings(default, family)
            codes, threshold = shown["ticked"], shown["threshold"]
        gr.Markdown(INTRO)
        self._settings_ui(category_choices, codes, threshold)
        self.status = gr.HTML(elem_id="gl-eval-status")  # escaped text: run names are visitors'
        with gr.Row(equal_height=False):
            self.report = gr.Dataframe(headers=view.REPORT_HEADERS, datatype="str",
                                       interactive=False, label="Report", elem_id="gl-eval-report")
            self.curve = gr.LinePlot(None, x="recall", y="precision", x_lim=[0, 1],
                                     y_lim=[0, 1.05], title="Precision-recall curve",
                                     tooltip=["threshold", "precision", "recall"], height=320)
        self.per_category = gr.Dataframe(headers=view.CATEGORY_HEADERS, datatype="str",
                                         interactive=False,
                                         label="Per category (codes the gold labels use)")
        self.bad = gr.Dataframe(headers=view.BAD_ROW_HEADERS, datatype=["number", "str"],
                                interactive=False, label="Bad rows (skipped, by line number)",
                                elem_id="gl-eval-bad")
        with gr.Accordion("Report (JSON)", open=False):
            self.json = gr.JSON()
        self._rows_ui()
        self._queue_ui()
        self._compare_ui()
        self.policy_panel = PolicyPanel(self, policies)  # thresholds, policies, sweeps
        self.opened = gr.State(None)  # the row opened last: logic.open_row's dict
        self.evaluated = gr.State(None)  # changes after each evaluation the page ran

    def _settings_ui(self, category_choices: list[tuple[str, str]], codes: Sequence[str],
                     threshold: float) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                self.source = gr.Radio(view.source_choices(self.builtins, labelled=True),
                                       value=view.UPLOAD, label="Dataset",
                                       elem_id="gl-eval-source")
                self.file = gr.File(label="Dataset file (CSV or JSONL, may be .gz)",
                                    file_types=[".csv", ".jsonl", ".json", ".gz"],
                                    type="filepath", elem_id="gl-eval-file")
                gr.Markdown(FILE_NOTE, elem_id="gl-eval-kept-note")
                self.format = gr.Dropdown(
                    [f for f in FORMATS], value="csv", label="Format",
                    info="csv / jsonl: prompt, response, label, categories, attack, id columns; "
                         "xstest and openai-moderation: those sets' own columns")
                self.name = gr.Textbox(
                    label="Run name", max_lines=1, elem_id="gl-eval-name",
                    placeholder="empty: a name made from the dataset and settings",
                    info="A stopped run resumes when you run the same name with the same "
                         "settings: stored rows are not judged again.")
                with gr.Row():  # no minimum: the handler refuses a bad number in place
                    self.limit = gr.Number(None, precision=0, label="Limit rows",
                                           elem_id="gl-eval-limit",
                                           info="the first N good rows; 0 or empty for all")
                    self.batch_size = gr.Number(view.DEFAULT_BATCH_SIZE, precision=0,
                                                label="Batch size", elem_id="gl-eval-batch-size")
            with gr.Column(scale=2):
                self.categories = gr.CheckboxGroup(category_choices, value=list(codes),
                                                   label="Categories to judge",
                                                   info="unticked categories are excluded")
                self.copy = gr.Button("Use the Moderate tab's categories", size="sm")
                self.threshold = gr.Slider(
                    0.0, 1.0, value=threshold, step=0.0001, label="Threshold",
                    elem_id="gl-eval-threshold",
                    info="unsafe when p_unsafe >= it; moving it re-reads the picked run's "
                         "stored scores (the model does not run again)")
                self.run = gr.Button("Run evaluation", variant="primary", elem_id="gl-eval-run")

    def _rows_ui(self) -> None:
        gr.Markdown("### The run, row by row")
        with gr.Row():
            self.run_a = gr.Dropdown([], label="Run (A)", allow_custom_value=True,
                                     elem_id="gl-eval-run-a",
                                     info="the report, the rows and a queue read this run")
            self.show = gr.Dropdown(view.SHOW_CHOICES, value=view.ALL, label="Show",
                                    elem_id="gl-eval-show")
            self.category = gr.Dropdown(choices(self.family), value=None, label="Category",
                                        info="for 'rows with the category'",
                                        allow_custom_value=True)
            self.refresh = gr.Button("Refresh run list", size="sm")
        self.rows_note = gr.HTML(elem_id="gl-eval-rows-note")
        self.rows = gr.Dataframe(headers=view.ROW_HEADERS, datatype="str", interactive=False,
                                 wrap=True, max_height=480, elem_id="gl-eval-rows",
                                 column_widths=["11%", "9%", "7%", "8%", "8%", "17%", "25%",
                                                "15%"],
                                 label="Rows (select one to open it in the Moderate tab)")
        self.opened_note = gr.HTML(elem_id="gl-eval-opened-note")
        with gr.Accordion("Opened row (JSON)", open=False):
            self.opened_json = gr.JSON(elem_id="gl-eval-opened")
        self.row_id = gr.Textbox(visible=False)  # /run_row's row id

    def _queue_ui(self) -> None:
        gr.Markdown("### Make a review queue")
        with gr.Row():
            self.queue_name = gr.Textbox(label="Queue name", max_lines=1,
                                         elem_id="gl-eval-queue-name")
            self.queue_rows = gr.Dropdown(
                view.QUEUE_CHOICES, value="false-negatives", label="Which rows of run A",
                info="picked by the run's stored verdicts, at its stored threshold")
            self.band = gr.Number(0.1, label="Band (uncertain)",
                                  info="p_unsafe within this of the threshold")
            self.overlap = gr.Number(1, label="Reviewers per item", info="1 to 10")
            self.pg_threshold = gr.Number(
                None, label="Prompt Guard threshold", elem_id="gl-eval-queue-pg-threshold",
                info="for Prompt Guard's misses; empty: the run's policy's, else 0.9")
        self.make_queue = gr.Button("Make the queue", variant="secondary", size="sm",
                                    elem_id="gl-eval-make-queue")
        self.queue_status = gr.HTML(elem_id="gl-eval-queue-status")
        with gr.Accordion("Queue (JSON)", open=False):
            self.queue_json = gr.JSON()

    def _compare_ui(self) -> None:
        gr.Markdown("### Compare two runs")
        with gr.Row():
            self.run_b = gr.Dropdown([], label="Run B", allow_custom_value=True,
                                     info="compared with run A; also the run B of 'differs'")
            self.compare = gr.Button("Compare A with B", variant="secondary", size="sm")
        self.compare_text = gr.HTML(elem_id="gl-compare-text")
        self.compare_table = gr.Dataframe(headers=view.COMPARE_HEADERS, datatype="str",
                                          interactive=False, label="Side by side")

    def reviewer(self, action: str, session: Any, typed: Any, profile: Any) -> None:
        """Refuse anonymous visitors when the server has reviewer accounts."""
        if self.bar is not None and self.bar.gate.restricted:
            self.bar.who(action, session, typed, profile)

    def run_lists(self, session: Any = None, typed: Any = None,
                  profile: gr.OAuthProfile | None = None) -> dict:
        """New choices for both dropdowns; what is picked stays picked (reviewers only)."""
        try:
            self.reviewer("list evaluation runs", session, typed, profile)
        except LabelsError:
            return {self.run_a: gr.Dropdown(choices=[]), self.run_b: gr.Dropdown(choices=[])}
        names = view.run_names(self.runs)
        return {self.run_a: gr.Dropdown(choices=names), self.run_b: gr.Dropdown(choices=names)}

    @property
    def shown(self) -> list[Any]:
        """What showing a stored run updates (the /run_rows outputs)."""
        return [self.threshold, self.report, self.curve, self.per_category, self.bad, self.json,
                self.rows, self.rows_note, self.category]

    def show_run(self, name, threshold, show, code, other, session=None, typed=None,
                 profile: gr.OAuthProfile | None = None) -> dict:
        """Run `name` at `threshold` (None: its own) through the filter: stored scores only."""
        self.reviewer("read evaluation runs", session, typed, profile)
        pg = prompt_guard_runs.run_threshold(self.store, self.policy_panel.book,
                                             view.stored_run(self.runs, name).settings)
        shown = view.run_view(self.runs, name, threshold, show, code, other,
                              loaded_model=self.model, loaded_family=self.family,
                              prompt_guard_threshold=pg)
        codes = [c for _, c in shown.codes]
        return {self.threshold: shown.threshold, self.report: view.report_rows(shown.report),
                self.curve: view.curve_frame(shown.report),
                self.per_category: view.category_rows(shown.report, shown.family),
                self.bad: [[b.line, b.message] for b in shown.texts.bad_rows],
                self.json: shown.to_json(), self.rows: shown.rows,
                self.rows_note: _text(shown.note),
                self.category: gr.Dropdown(choices=shown.codes,
                                           value=code if code in codes else None)}

    def open_row(self, name, row_id, session=None, typed=None,
                 profile: gr.OAuthProfile | None = None) -> dict:
        """/run_row: the row as its run stored it, for the Moderate view."""
        self.reviewer("read evaluation runs", session, typed, profile)
        opened = view.open_row(self.runs, name, row_id, loaded_model=self.model,
                               loaded_family=self.family)
        return {self.opened: opened, self.opened_json: opened}

    def select_row(self, name, threshold, session=None, typed=None,
                   profile: gr.OAuthProfile | None = None, evt: gr.SelectData = None) -> dict:
        """A row picked in the table opens at the threshold the table shows."""
        self.reviewer("read evaluation runs", session, typed, profile)
        row = evt.row_value if evt is not None and evt.row_value else None
        row_id = row[0] if row else None
        opened = view.open_row(self.runs, name, row_id, threshold, loaded_model=self.model,
                               loaded_family=self.family)
        p = "-" if opened["p_unsafe"] is None else f"{opened['p_unsafe']:.4f}"
        note = OPENED.format(row=row_id, run=name, verdict=opened["verdict"] or "failed", p=p,
                             t=opened["threshold"])
        return {self.row_id: row_id, self.opened: opened, self.opened_json: opened,
                self.opened_note: _text(note)}

    def queue_from_stored_run(self, queue, name, select, other, band, overlap, session=None,
                              typed=None, pg_threshold=None,
                              profile: gr.OAuthProfile | None = None) -> dict:
        """/queue_from_run: a review queue of run `name`'s rows; returns the queue's JSON.
        `pg_threshold` (the last input, optional): Prompt Guard's threshold for its misses,
        empty for the run's policy's, else 0.9."""
        self.reviewer("make review queues", session, typed, profile)
        run = view.stored_run(self.runs, name)
        pg = prompt_guard_runs.parse_threshold(pg_threshold, prompt_guard_runs.run_threshold(
            self.store, self.policy_panel.book, run.settings))
        fill = view.make_queue(self.store, queue, run.name, select, other, band, overlap,
                               family=view.run_family(run.settings, self.model, self.family),
                               prompt_guard_threshold=pg)
        return {self.queue_json: fill.to_json()}

    def compare_stored(self, name_a, name_b, session=None, typed=None,
                       profile: gr.OAuthProfile | None = None) -> dict:
        self.reviewer("read evaluation runs", session, typed, profile)
        comparison = view.compare_runs(self.runs, name_a, name_b)
        settings = view.setting_differences(self.runs, name_a, name_b)
        return {self.compare_text: _text(view.comparison_text(comparison, settings)),
                self.compare_table: view.comparison_rows(comparison)}

    def wire(self, demo: gr.Blocks, guards: Guards, moderate_categories: gr.CheckboxGroup,
             excluded_of: Callable[[Sequence[str]], tuple[str, ...]], *, concurrency: int,
             concurrency_id: str, judge_batch: Callable | None = None,
             variant_judge: Callable | None = None) -> None:
        """`judge_batch` judges one batch of rows (logic.gpu_judge: one GPU call each);
        `variant_judge` one batch of a policy sweep (guard_app.evaluate.sweep.gpu_judge)."""
        if guards.llama_guard is not None:
            self.model = guards.llama_guard.name
        who = list(self.bar.inputs) if self.bar is not None else []
        self._wire_settings(moderate_categories)
        self._wire_run(guards, excluded_of, who, concurrency=concurrency,
                       concurrency_id=concurrency_id, judge_batch=judge_batch,
                       variant_judge=variant_judge)
        self._wire_rows(who)
        self.policy_panel.wire(guards, who, excluded_of, judge=variant_judge,
                               concurrency=concurrency, concurrency_id=concurrency_id)
        self._wire_kept(demo)
        # The status line names run A, the run the report and the rows read.
        self.run_a.change(self.run_a_status, [self.run_a, self.evaluated, *who], [self.status],
                          **PRIVATE)
        # Prompt Guard's threshold comes last, after the reviewer's name, so callers of the
        # first seven inputs keep working (empty: the run's policy's, else 0.9).
        pad = [] if who else [gr.State(None), gr.State(None)]
        on_page_and_api(self.make_queue.click, self.queue_from_stored_run,
                        [self.queue_name, self.run_a, self.queue_rows, self.run_b, self.band,
                         self.overlap, *who, *pad, self.pg_threshold], [self.queue_json],
                        api_name="queue_from_run")
        self.queue_json.change(lambda fill: _text((fill or {}).get("summary", "")),
                               [self.queue_json], [self.queue_status], **PRIVATE)
        on_page_and_api(self.compare.click, self.compare_stored, [self.run_a, self.run_b, *who],
                        [self.compare_text, self.compare_table], api_name="compare_runs")
        self.refresh.click(self.run_lists, who, [self.run_a, self.run_b], **PRIVATE)
        demo.load(self.run_lists, who, [self.run_a, self.run_b], **PRIVATE)

    def _wire_settings(self, moderate_categories: gr.CheckboxGroup) -> None:
        def on_source(source):
            upload = source == view.UPLOAD
            return {self.file: gr.File(visible=upload), self.format: gr.Dropdown(visible=upload)}

        def on_file(path):
            fmt = view.guess_format(path)
            return {self.format: gr.Dropdown(value=fmt) if fmt else gr.Dropdown()}

        self.source.change(on_source, [self.source], [self.file, self.format], **PRIVATE)
        self.file.upload(on_file, [self.file], [self.format], **PRIVATE)
        self.copy.click(lambda ticked: list(ticked or []), [moderate_categories],
                        [self.categories], **PRIVATE)

    def _wire_run(self, guards: Guards, excluded_of: Callable[[Sequence[str]], tuple[str, ...]],
                  who: list[Any], *, concurrency: int, concurrency_id: str,
                  judge_batch: Callable | None, variant_judge: Callable | None = None) -> None:
        book = self.policy_panel.book

        def run_evaluation(source, path, fmt, name, limit, batch_size, ticked, threshold,
                           session=None, typed=None, choice=None,
                           profile: gr.OAuthProfile | None = None, request: gr.Request = None,
                           progress=gr.Progress()):  # noqa: B008 (gradio finds the bar this way)
            self.reviewer("run evaluations", session, typed, profile)
            if (source or view.UPLOAD) == view.UPLOAD and path:
                uploads.check_owned(path, request)  # only what this visitor uploaded
                uploads.keep(path)  # the run's rows read their texts from it again
            dataset = view.pick_dataset(source or view.UPLOAD, path, fmt, self.builtins,
                                        store=self.store, family=self.family,
                                        hidden=self.blind(source, session, typed, profile))

            def step(done: int, total: int) -> None:
                progress((done, total), desc="rows judged", unit="rows")

            excluded, threshold = excluded_of(ticked), view.parse_threshold(threshold)
            policy = sweep.chosen_policy(book, choice)
            if policy is None:  # the tab's own settings: the plain runner, no policy recorded
                evaluation = view.evaluate(
                    dataset, guards, self.runs, name=name, excluded=excluded,
                    threshold=threshold, batch_size=view.parse_batch_size(batch_size),
                    limit=view.parse_limit(limit), progress=step, judge_batch=judge_batch)
                policy = ad_hoc(tuple(excluded), threshold, self.family)
            else:  # the policy's decisions, stored as a sweep stores its first variant
                used = sweep.policy_guards(guards, gpu.prompt_guard_choices(guards), policy)
                outcome = sweep.run_policy(
                    dataset, used, self.runs, policy, name=(name or "").strip() or None,
                    batch_size=view.parse_batch_size(batch_size),
                    limit=view.parse_limit(limit), progress=step, judge=variant_judge)
                # Prompt Guard's figures at the policy's threshold, of the model it used.
                evaluation = view.Evaluation(dataset, outcome, prompt_guard_runs.policy_report(
                    dataset, used, self.runs, policy, outcome.run, local=variant_judge is None))
            report, run = evaluation.report, evaluation.outcome.run.name
            lists = self.run_lists(session, typed, profile)
            said = f"{view.status_text(evaluation)} {sweep.tab_note(policy, excluded, threshold)}"
            return {self.status: _text(said),
                    self.report: view.report_rows(report), self.curve: view.curve_frame(report),
                    self.per_category: view.category_rows(report, self.family),
                    self.bad: view.bad_rows(dataset), self.json: view.report_json(evaluation),
                    **lists, self.run_a: gr.Dropdown(choices=view.run_names(self.runs), value=run),
                    self.evaluated: (run, time.time_ns(), _text(said))}

        # The page then shows the run row by row (self.evaluated changes); a State output is no
        # output of the endpoint for gradio_client, so /evaluate keeps its eight. The policy
        # comes last, after the reviewer's name, so callers of its first nine keep working (it
        # defaults to the picker's first value: the server's default policy, if any).
        pad = [] if who else [gr.State(None), gr.State(None)]
        on_page_and_api(
            self.run.click, run_evaluation,
            [self.source, self.file, self.format, self.name, self.limit, self.batch_size,
             self.categories, self.threshold, *who, *pad, self.policy_panel.policy],
            [self.status, self.report, self.curve, self.per_category, self.bad, self.json,
             self.run_a, self.run_b, self.evaluated],
            api_name="evaluate", concurrency_limit=concurrency, concurrency_id=concurrency_id)

    def _wire_rows(self, who: list[Any]) -> None:
        shown = self.shown
        filters = [self.show, self.category, self.run_b, *who]

        def page(fn, inputs, outputs, **options):
            # Moving the threshold, the filter, the category or run B re-reads the stored run.
            gr.on([self.threshold.release, self.show.input, self.category.input,
                   self.run_b.input], _with_run(fn, outputs), inputs, outputs, **options)

        on_page_and_api(page, self.show_run, [self.run_a, self.threshold, *filters], shown,
                        api_name="run_rows")

        self.run_a.input(in_place(_with_run(self._picked, shown), shown),
                         [self.run_a, *filters], shown, **PRIVATE)
        self.evaluated.change(in_place(_with_run(self.show_run, shown), shown),
                              [self.run_a, self.threshold, *filters], shown, **PRIVATE)
        opened = [self.row_id, self.opened, self.opened_json, self.opened_note]
        self.rows.select(in_place(self.select_row, opened), [self.run_a, self.threshold, *who],
                         opened, **PRIVATE)
        gr.Button(visible=False).click(guarded(self.open_row), [self.run_a, self.row_id, *who],
                                       [self.opened, self.opened_json], api_name="run_row")

    def blind(self, source: str | None, session: Any, typed: Any, profile: Any
              ) -> frozenset[int]:
        """The labelled examples this reviewer labels blind (an open queue item of theirs):
        a run over the labelled examples leaves them out, so their gold does not show."""
        if source != view.LABELLED or self.bar is None:
            return frozenset()
        name = self.bar.who("run evaluations", session, typed, profile)
        return blind_examples(self.store, name) if name else frozenset()

    def run_a_status(self, name, evaluated, session=None, typed=None,
                     profile: gr.OAuthProfile | None = None) -> Any:
        """The status line for the run A now picked; the run this page evaluated last keeps
        what its evaluation said."""
        if not name:
            return gr.skip()
        if evaluated and evaluated[0] == name:
            return evaluated[2]
        try:
            self.reviewer("read evaluation runs", session, typed, profile)
            run = self.runs.get(str(name).strip())
        except LabelsError:
            return gr.skip()
        return _text(view.run_a_status(run))

    def _wire_kept(self, demo: gr.Blocks) -> None:
        """Keep the form in the browser (gr.BrowserState), and put it back on a reload. The
        state is made here, outside the tab: a tab not yet opened is not mounted, and a state
        inside it would not have read the browser's storage when the page loads."""
        self.kept = gr.BrowserState(None, storage_key=KEPT_KEY)
        panel = self.policy_panel
        fields = {"source": self.source, "format": self.format, "limit": self.limit,
                  "batch_size": self.batch_size, "categories": self.categories,
                  "threshold": self.threshold, "policy": panel.policy, "typed": panel.typed,
                  "target": panel.target, "target_value": panel.target_value,
                  "leave_out": panel.leave_out, "alone": panel.alone}
        keys, parts = list(fields), list(fields.values())

        def keep(*values):
            return dict(zip(keys, values, strict=True))

        def restore(kept):
            offered = {"source": [k for _, k in view.source_choices(self.builtins, True)],
                       "policy": picker.choices(panel.book)}
            found = view.kept_form(kept, offered, self.codes)
            return {component: found.get(key, gr.skip()) for key, component in fields.items()}

        gr.on([part.change for part in parts], keep, parts, [self.kept], queue=False,
              show_progress="hidden", **PRIVATE)
        demo.load(restore, [self.kept], parts, queue=False, show_progress="hidden", **PRIVATE)

    def _picked(self, name, show, code, other, session=None, typed=None,
                profile: gr.OAuthProfile | None = None) -> dict:
        """A run picked from the list: shown at its own stored threshold."""
        return self.show_run(name, None, show, code, other, session, typed, profile)
