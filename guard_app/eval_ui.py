"""The Batch evaluation tab: gradio components over eval_view.py and the stored runs."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from guard.core.categories import Family
from guard.engines.service import Guards
from guard.eval import FORMATS
from guard_app import eval_view as view
from guard_app.guarded import guarded
from labels.errors import LabelsError
from labels.runs import Runs

PRIVATE = {"api_visibility": "private"}
INTRO = (
    "Run Llama Guard (and Prompt Guard) over a labelled dataset and read model-card metrics: "
    "precision, recall, F1, false positive rate and the area under the precision-recall curve. "
    "**CSV / JSONL** files need a `prompt` (or `text`, `input`) column; optional `response` "
    "(then the response is judged), `label` (safe/unsafe, 0/1), `categories` (e.g. `S1,S10`) "
    "and `id`. Every run is stored under its name in the labels database.")


class EvalTab:
    """`bar` is the page's ReviewerBar: with reviewer accounts, only reviewers run and read runs."""

    def __init__(self, store: Any, *, builtins: Mapping[str, tuple[str, Path, str]],
                 category_choices: list[tuple[str, str]], codes: Sequence[str],
                 threshold: float, family: Family = Family.LLAMA_GUARD_4, bar: Any = None):
        self.runs = Runs(store)
        self.bar = bar
        self.family = family
        self.builtins = dict(builtins)
        self.codes = tuple(codes)
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                self.source = gr.Radio(view.source_choices(self.builtins), value=view.UPLOAD,
                                       label="Dataset", elem_id="gl-eval-source",
                                       visible=bool(self.builtins))
                self.file = gr.File(label="Dataset file (CSV or JSONL, may be .gz)",
                                    file_types=[".csv", ".jsonl", ".json", ".gz"],
                                    type="filepath", elem_id="gl-eval-file")
                self.format = gr.Dropdown(
                    [f for f in FORMATS], value="csv", label="Format",
                    info="csv / jsonl: prompt, response, label, categories, id columns; xstest "
                         "and openai-moderation: those sets' own columns")
                self.name = gr.Textbox(
                    label="Run name", max_lines=1, elem_id="gl-eval-name",
                    placeholder="empty: a name made from the dataset and settings",
                    info="A stopped run resumes when you run the same name with the same "
                         "settings: stored rows are not judged again.")
                with gr.Row():
                    self.limit = gr.Number(None, precision=0, minimum=0, label="Limit rows",
                                           info="the first N good rows; 0 or empty for all")
                    self.batch_size = gr.Number(view.DEFAULT_BATCH_SIZE, precision=0, minimum=1,
                                                label="Batch size")
            with gr.Column(scale=2):
                self.categories = gr.CheckboxGroup(category_choices, value=list(codes),
                                                   label="Categories to judge",
                                                   info="unticked categories are excluded")
                self.copy = gr.Button("Use the Moderate tab's categories", size="sm")
                self.threshold = gr.Slider(0.0, 1.0, value=threshold, step=0.01,
                                           label="Threshold", info="unsafe when p_unsafe >= it")
                self.run = gr.Button("Run evaluation", variant="primary", elem_id="gl-eval-run")
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
        gr.Markdown("### Compare two runs")
        with gr.Row():
            self.run_a = gr.Dropdown([], label="Run A", allow_custom_value=True)
            self.run_b = gr.Dropdown([], label="Run B", allow_custom_value=True)
        with gr.Row():
            self.refresh = gr.Button("Refresh run list", size="sm")
            self.compare = gr.Button("Compare", variant="secondary", size="sm")
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

    def wire(self, demo: gr.Blocks, guards: Guards, moderate_categories: gr.CheckboxGroup,
             excluded_of: Callable[[Sequence[str]], tuple[str, ...]], *, concurrency: int,
             concurrency_id: str, judge_batch: Callable | None = None) -> None:
        """`judge_batch` judges one batch of rows (eval_view.gpu_judge: one GPU call each)."""
        def on_source(source):
            upload = source == view.UPLOAD
            return {self.file: gr.File(visible=upload), self.format: gr.Dropdown(visible=upload)}

        def on_file(path):
            fmt = view.guess_format(path)
            return {self.format: gr.Dropdown(value=fmt) if fmt else gr.Dropdown()}

        @guarded
        def evaluate(source, path, fmt, name, limit, batch_size, ticked, threshold,
                     session=None, typed=None, profile: gr.OAuthProfile | None = None,
                     progress=gr.Progress()):  # noqa: B008 (gradio finds the bar this way)
            self.reviewer("run evaluations", session, typed, profile)
            dataset = view.pick_dataset(source or view.UPLOAD, path, fmt, self.builtins)

            def step(done: int, total: int) -> None:
                progress((done, total), desc="rows judged", unit="rows")

            evaluation = view.evaluate(
                dataset, guards, self.runs, name=name, excluded=excluded_of(ticked),
                threshold=float(threshold), batch_size=view.parse_batch_size(batch_size),
                limit=view.parse_limit(limit), progress=step, judge_batch=judge_batch)
            report = evaluation.report
            return {self.status: html.escape(view.status_text(evaluation), quote=False),
                    self.report: view.report_rows(report), self.curve: view.curve_frame(report),
                    self.per_category: view.category_rows(report, self.family),
                    self.bad: view.bad_rows(dataset), self.json: view.report_json(evaluation),
                    **self.run_lists(session, typed, profile)}

        @guarded
        def compare(name_a, name_b, session=None, typed=None,
                    profile: gr.OAuthProfile | None = None):
            self.reviewer("read evaluation runs", session, typed, profile)
            comparison = view.compare_runs(self.runs, name_a, name_b)
            return {self.compare_text: html.escape(view.comparison_text(comparison), quote=False),
                    self.compare_table: view.comparison_rows(comparison)}

        self.source.change(on_source, [self.source], [self.file, self.format], **PRIVATE)
        self.file.upload(on_file, [self.file], [self.format], **PRIVATE)
        self.copy.click(lambda ticked: list(ticked or []), [moderate_categories],
                        [self.categories], **PRIVATE)
        who = list(self.bar.inputs) if self.bar is not None else []
        self.run.click(
            evaluate, [self.source, self.file, self.format, self.name, self.limit,
                       self.batch_size, self.categories, self.threshold, *who],
            [self.status, self.report, self.curve, self.per_category, self.bad, self.json,
             self.run_a, self.run_b],
            api_name="evaluate", concurrency_limit=concurrency, concurrency_id=concurrency_id)
        self.compare.click(compare, [self.run_a, self.run_b, *who],
                           [self.compare_text, self.compare_table], api_name="compare_runs")
        self.refresh.click(self.run_lists, who, [self.run_a, self.run_b], **PRIVATE)
        demo.load(self.run_lists, who, [self.run_a, self.run_b], **PRIVATE)
