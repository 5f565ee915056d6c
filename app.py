"""Guard Lab: Llama Guard 4 and Prompt Guard 2 in a browser, on Hugging Face Spaces or locally.

`python app.py` loads the real models (or says on the page which failed and why);
`python app.py --tiny` runs the tiny offline test models. `python app.py --help` lists options.
The page is a thin layer over `guard` (models) and `labels` (the label store).
"""

from __future__ import annotations

import functools
import html
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from guard.core.categories import LLAMA_GUARD_4_CATEGORIES, Family, categories_for
from guard.core.conversation import MAX_IMAGES
from guard.core.errors import GuardError, ModelLoadError
from guard.core.prompt_guard_text import PREPROCESSING, check_preprocessing
from guard.core.prompts import CustomCategory, check_custom, plan
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.engine import ModelInfo
from guard.engines.service import Guards
from guard_app import editor, eval_view, explore_ui, fair, gpu, openai_api, results, tools
from guard_app.api import EXAMPLE, build_conversation, parse_excluded, parse_threshold
from guard_app.config import Serving
from guard_app.examples import EXAMPLES, example_turns, write_swatches
from guard_app.guarded import guarded
from guard_app.models import PROMPT_GUARD, PromptGuardChoices
from guard_app.style import CSS, head

CODES = tuple(c.code for c in LLAMA_GUARD_4_CATEGORIES)
MAX_CUSTOM = 8
S14_OFF = "S14 Code Interpreter Abuse (off while the conversation has images)"
GPU = "gpu"  # the concurrency group of every interactive event that runs a model
EVAL = "eval"  # batch evaluations: their own group, one at a time, so they never hold GPU's slot


def engine_info(guards: Guards) -> ModelInfo | None:
    return guards.llama_guard.describe() if guards.llama_guard is not None else None


def engine_family(guards: Guards) -> Family:
    """The loaded Llama Guard's family; Llama Guard 4's categories when none is loaded."""
    info = engine_info(guards)
    return Family(info.family) if info is not None else Family.LLAMA_GUARD_4


def engine_line(info: ModelInfo) -> str:
    """e.g. 'Llama-Guard-3-1B.gguf (Llama Guard 3) on llama-cpp, cpu'."""
    return f"{info.name} ({Family(info.family).label}) on {info.engine}, {info.device}"


def category_choices(images: bool, family: Family | str = Family.LLAMA_GUARD_4
                     ) -> list[tuple[str, str]]:
    return [(S14_OFF if images and c.text_only else f"{c.code} {c.card_name}", c.code)
            for c in categories_for(family)]


def excluded_codes(ticked: Sequence[str] | None, family: Family | str = Family.LLAMA_GUARD_4
                   ) -> tuple[str, ...]:
    """The family's fixed categories left unticked."""
    ticked = set(ticked or ())
    return tuple(c.code for c in categories_for(family) if c.code not in ticked)


def custom_categories(custom: Sequence[dict[str, str]]) -> tuple[CustomCategory, ...]:
    """The page's custom categories ({name, description}) as the engine takes them."""
    return gpu.custom_of(custom)


def add_custom(custom: Sequence[dict[str, str]], name: str, description: str
               ) -> list[dict[str, str]]:
    """The custom categories with one more, checked as the prompt will hold it (guard.core.prompts)."""
    name = " ".join((name or "").split()).rstrip(".")
    if not name:
        raise GuardError("Give the custom category a short name, e.g. 'Medical misinformation'.")
    if len(custom) >= MAX_CUSTOM:
        raise GuardError(f"At most {MAX_CUSTOM} custom categories. Clear some first.")
    if any(c["name"].lower() == name.lower() for c in custom):
        raise GuardError(f"There is already a custom category named '{name}'.")
    new = [*custom, {"name": name, "description": " ".join((description or "").split())}]
    check_custom(custom_categories(new))  # lengths, markers and control tokens
    return new


def run_guards(guards: Guards, prompt_guards: PromptGuardChoices | None, turns: list[dict],
               ticked: Sequence[str], custom: Sequence[dict[str, str]], threshold: float,
               pg_choice: str | None, *, max_images: int = MAX_IMAGES,
               pg_preprocessing: str = "none") -> dict[str, Any]:
    """One run: the moderate() JSON, the prompt Llama Guard saw, and notes for the page.

    The conversation is built and checked here; the models run in one GPU call (guard_app.gpu).
    """
    conversation = editor.to_conversation(turns, max_images)
    excluded = excluded_codes(ticked, engine_family(guards))
    custom_cats = custom_categories(custom)
    notes = []
    if not ticked and not custom:
        notes.append("No category is ticked: Llama Guard has an empty policy to judge against.")
    prompt_guard, pg_key = guards.prompt_guard, None
    if prompt_guards is not None and pg_choice:
        try:
            prompt_guard, pg_key = prompt_guards.get(pg_choice), pg_choice
        except ModelLoadError as exc:
            prompt_guard = None
            notes.append(f"Prompt Guard {pg_choice} did not load: {exc}")
    if guards.llama_guard is None and prompt_guard is None:
        raise ModelLoadError("No model is loaded, so nothing can be judged. The banner at the top "
                             "says why; fix that and restart, or start with --tiny.")
    if guards.llama_guard is None:
        notes.append("Llama Guard is not loaded: only Prompt Guard ran (see the banner).")
    prompt_plan = (guards.llama_guard.plan(conversation, excluded, custom_cats)
                   if guards.llama_guard is not None
                   else plan(conversation, excluded, custom=custom_cats))
    result = gpu.moderate(gpu.register(guards, prompt_guards), gpu.plain(conversation),
                          list(excluded), threshold, gpu.plain_custom(custom_cats),
                          prompt_guard=pg_key, use_prompt_guard=prompt_guard is not None,
                          pg_preprocessing=check_preprocessing(pg_preprocessing))
    return {"result": result, "prompt": prompt_plan.prompt, "notes": notes,
            "turns": [dict(t, images=list(t["images"])) for t in turns],
            "excluded": list(excluded), "custom": list(custom),
            "pg_label": (prompt_guards.labels.get(pg_choice, "") if prompt_guards and pg_choice
                         else "")}


def moderate_api(guards: Guards, conversation: str | list | None, images: Sequence[str] | None,
                 excluded: str | Sequence[str] | None, threshold: float | str | None, *,
                 default_threshold: float = DEFAULT_THRESHOLD,
                 max_images: int = MAX_IMAGES,
                 prompt_guard_preprocessing: str | None = None) -> dict[str, Any]:
    """/moderate: the same JSON as `python -m guard classify`."""
    built = build_conversation(conversation, images, max_images=max_images)
    if guards.llama_guard is None and guards.prompt_guard is None:
        raise ModelLoadError("No model is loaded on this server; see the banner on its page.")
    preprocessing = check_preprocessing(prompt_guard_preprocessing)
    return gpu.moderate(gpu.register(guards), gpu.plain(built), list(parse_excluded(excluded)),
                        parse_threshold(threshold, default_threshold),
                        pg_preprocessing=preprocessing)


def explore_inputs(guards: Guards, turns: list[dict], ticked: Sequence[str] | None,
                   custom: Sequence[dict[str, str]], max_images: int = MAX_IMAGES) -> tuple:
    """What the Explore panel runs on: (engine, conversation, excluded, custom categories)."""
    if guards.llama_guard is None:
        raise ModelLoadError("Llama Guard is not loaded, so there is nothing to explore. The "
                             "banner at the top says why.")
    return (guards.llama_guard, editor.to_conversation(turns, max_images),
            excluded_codes(ticked, engine_family(guards)), custom_categories(custom))


def images_off_note(info: ModelInfo) -> str:
    """Why the page takes no images, when the loaded engine or family reads text only."""
    how = ("llama.cpp runs Llama Guard on text only" if info.engine == "llama-cpp"
           else f"{Family(info.family).label} reads text only")
    return (f"*Images are off on this server: {how}. Llama Guard 4 on the transformers engine "
            f"(or an OpenAI-compatible server serving it) judges images.*")


def build_demo(guards: Guards, *, prompt_guards: PromptGuardChoices | None = None,
               default_prompt_guard: str | None = None, store: Any = None, tiny: bool = False,
               failures: dict[str, str] | None = None, threshold: float = DEFAULT_THRESHOLD,
               max_images: int = MAX_IMAGES, concurrency: int = 1,
               swatch_dir: str | None = None, data_dir: str | Path | None = None,
               reviewers: Any = None, serving: Serving | None = None,
               api_key: str | None = None,
               prompt_guard_preprocessing: str = "none", tuner: Any = None,
               tune_off: str = "") -> gr.Blocks:
    """The whole page over already loaded models (and optionally a `labels.Store`).

    `prompt_guard_preprocessing` is how Prompt Guard reads messages unless a visitor changes
    it: "none" (the model card) or "llamafirewall" (guard.core.prompt_guard_text).

    `api_key`, when given, is the bearer key /v1/moderations asks for (GUARD_LAB_API_KEY).
    `data_dir` holds the public evaluation sets; None looks in the default place. `serving`
    holds the limits of a public server (queue, per visitor, state lifetime, upload size).
    """
    prompt_guard_preprocessing = check_preprocessing(prompt_guard_preprocessing)
    if prompt_guards is None and guards.prompt_guard is not None:
        prompt_guards = PromptGuardChoices.fixed(guards.prompt_guard, tiny=tiny)
    if prompt_guards is not None and default_prompt_guard not in prompt_guards.sources:
        default_prompt_guard = next(iter(prompt_guards.sources))
    failures = dict(failures or {})
    swatches = write_swatches(swatch_dir or tempfile.mkdtemp(prefix="guard-lab-swatches-"))
    slot = gpu.register(guards, prompt_guards)
    info = engine_info(guards)
    family = engine_family(guards)
    codes = tuple(c.code for c in categories_for(family))
    takes_images = info is None or info.multimodal
    builtins = eval_view.builtin_sets(data_dir if data_dir is not None
                                      else eval_view.default_data_dir())
    loaded = {}
    if info is not None:
        loaded["Llama Guard"] = engine_line(info)
    if guards.prompt_guard is not None:
        loaded[PROMPT_GUARD] = guards.prompt_guard.name
    private = {"api_visibility": "private"}
    edit_outputs: list = []  # filled once the composer exists; the turn cards' Edit needs it

    serving = serving or Serving()
    ttl = serving.state_ttl_s
    # Uploads (and the files the app writes into Gradio's cache) go when the state that holds
    # them may have expired; checked every ten minutes.
    with gr.Blocks(title="Guard Lab", delete_cache=(600, ttl)) as demo:
        turns = gr.State([], time_to_live=ttl)
        pending = gr.State([], time_to_live=ttl)
        editing = gr.State(None, time_to_live=ttl)
        custom = gr.State([], time_to_live=ttl)
        last = gr.State(None, time_to_live=ttl)

        gr.Markdown(f"# Guard Lab\nCheck a conversation with Meta's **{family.label}** "
                    "(harmful content) and **Prompt Guard 2** (jailbreaks and prompt injection).")
        gr.HTML(results.banner_html(tiny, failures, loaded, family), elem_id="gl-banner")
        reviewer_bar = _reviewer_bar(reviewers) if store is not None else None

        with gr.Tabs():
            with gr.Tab("Moderate", id="moderate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        gr.Markdown("### Conversation")
                        with gr.Row():
                            example_buttons = [gr.Button(e.name, size="sm", min_width=60)
                                               for e in EXAMPLES]

                        @gr.render(inputs=[turns, editing], triggers=[turns.change, editing.change,
                                                                      demo.load])
                        def show_turns(turn_list, editing_index):
                            if not turn_list:
                                gr.HTML('<div class="gl-empty">No turns yet. Write the user\'s '
                                        'message below and press <b>Add turn</b>, or load an '
                                        'example.</div>')
                                return
                            for i, turn in enumerate(turn_list):
                                classes = ["gl-turn"] + (["gl-editing"] if i == editing_index else [])
                                with gr.Group(elem_classes=classes):
                                    gr.HTML(editor.turn_html(i, turn, i == len(turn_list) - 1),
                                            elem_classes=["gl-turn-body"])
                                    if turn["images"] and i != editing_index:
                                        with gr.Row():
                                            for j, path in enumerate(turn["images"]):
                                                with gr.Column(min_width=90, scale=0,
                                                               elem_classes=["gl-thumb"]):
                                                    gr.Image(path, show_label=False, height=80,
                                                             width=80, interactive=False,
                                                             buttons=[], container=False)
                                                    gr.Button("Remove", size="sm",
                                                              elem_classes=["gl-remove"]).click(
                                                        functools.partial(remove_image, i, j),
                                                        [turns], [turns], **private)
                                    with gr.Row():
                                        gr.Button("Edit", size="sm", min_width=60).click(
                                            functools.partial(start_edit, i), [turns],
                                            edit_outputs, **private)
                                        gr.Button("Delete", size="sm", min_width=60,
                                                  variant="stop").click(
                                            functools.partial(remove_turn, i),
                                            [turns, editing], [turns, editing], **private)

                        summary = gr.HTML(editor.summary_html([], [], None, max_images))
                        with gr.Group():
                            role = gr.Radio(["user", "assistant"], value="user", label="Role",
                                            info="Roles alternate, starting with the user; the "
                                                 "next role is picked for you.")
                            text = gr.Textbox(label="Message", lines=3, elem_id="gl-text",
                                              placeholder="Type the message. A turn with images "
                                                          "needs text too.")
                            # image_mode=None and preprocess=False below: Gradio hands over the
                            # uploaded file undecoded, and the app reads its header first.
                            upload = gr.Image(type="filepath", sources=["upload", "clipboard"],
                                              image_mode=None,
                                              label=f"Attach images to this turn (upload, paste "
                                                    f"or drop; at most {max_images} in the "
                                                    f"conversation)",
                                              height=140, elem_id="gl-upload",
                                              visible=takes_images)
                            if not takes_images:
                                gr.Markdown(images_off_note(info), elem_id="gl-images-off")

                            @gr.render(inputs=[pending], triggers=[pending.change, demo.load])
                            def show_pending(paths):
                                if not paths:
                                    return
                                with gr.Row():
                                    for j, path in enumerate(paths):
                                        with gr.Column(min_width=90, scale=0,
                                                       elem_classes=["gl-thumb"]):
                                            gr.Image(path, show_label=False, height=80, width=80,
                                                     interactive=False, buttons=[],
                                                     container=False)
                                            gr.Button("Remove", size="sm").click(
                                                functools.partial(remove_pending, j), [pending],
                                                [pending], **private)

                        with gr.Row():
                            add_button = gr.Button("Add turn", variant="secondary",
                                                   elem_id="gl-add")
                            cancel_button = gr.Button("Cancel edit", visible=False)
                            clear_button = gr.Button("Clear conversation")

                    with gr.Column(scale=2):
                        gr.Markdown("### Policy and run")
                        categories = gr.CheckboxGroup(
                            category_choices(False, family), value=list(codes),
                            elem_id="gl-categories", label=f"{family.label} categories",
                            info="Ticked categories go into the prompt; hover a category for "
                                 "its description.")
                        with gr.Row():
                            all_button = gr.Button("All", size="sm", min_width=50)
                            none_button = gr.Button("None", size="sm", min_width=50)
                            reset_button = gr.Button("Reset", size="sm", min_width=50)
                        with gr.Accordion("What the categories mean", open=False):
                            gr.HTML(results.category_legend_html(family))
                        with gr.Accordion("Custom categories", open=False):
                            custom_name = gr.Textbox(label="Name", max_lines=1)
                            custom_description = gr.Textbox(label="Description", lines=2)
                            with gr.Row():
                                custom_add = gr.Button("Add category", size="sm")
                                custom_clear = gr.Button("Clear custom", size="sm")
                            custom_view = gr.HTML(results.custom_html([], family))
                        slider = gr.Slider(0.0, 1.0, value=threshold, step=0.01,
                                           label="Llama Guard threshold",
                                           info="unsafe when p_unsafe >= threshold; moving it "
                                                "re-applies it to the last run")
                        pg_radio = gr.Radio(
                            prompt_guards.choices if prompt_guards else [],
                            value=default_prompt_guard, label="Prompt Guard 2 model",
                            visible=prompt_guards is not None,
                            info="In test mode both choices run the same tiny model." if tiny
                            else "86M is multilingual; 22M is faster, English-centred.")
                        pg_firewall = gr.Checkbox(
                            prompt_guard_preprocessing == "llamafirewall",
                            label="Prompt Guard reads messages as LlamaFirewall does",
                            elem_id="gl-pg-firewall", visible=prompt_guards is not None,
                            info="Collapse spacing tricks such as “I g n o r e” before scoring, "
                                 "as Meta's production scanner does. Off: the model card's "
                                 "recipe, each message as written.")
                        run_button = gr.Button("Run both guards", variant="primary",
                                               elem_id="gl-run")

                gr.Markdown("### Results")
                results_view = gr.HTML(results.results_html(None, threshold), elem_id="gl-results")
                gr.Markdown(results.what_they_judge(family))
                with gr.Accordion("The prompt Llama Guard saw", open=False):
                    prompt_view = gr.Code(label="Rendered prompt", language=None, lines=12,
                                          interactive=False, wrap_lines=True)
                with gr.Accordion("Raw result (JSON)", open=False):
                    json_view = gr.JSON()
                explore = explore_ui.ExplorePanel()
                if info is not None and info.engine != "transformers":
                    gr.Markdown(f"*Per-category scores need the transformers engine (they read "
                                f"the model's logits); this server runs {info.engine}. Sweep and "
                                f"attribution work on any engine.*")
                review = _review_panel(store, reviewer_bar) if store is not None else None
                if store is None:
                    gr.Markdown("*Review: labelling is off on this server (start with `--db PATH` "
                                "to save labelled examples).*")

            with gr.Tab("Labeled examples", id="labels"):
                browser = _labels_tab(store, reviewer_bar)

            with gr.Tab("Batch evaluation", id="evaluate"):
                evaluation = _eval_tab(store, builtins, threshold, family, reviewer_bar)

            with gr.Tab("Tune", id="tune", visible=store is not None):
                tune = _tune_tab(tuner, tune_off, reviewer_bar) if store is not None else None
            with gr.Tab("API", id="api"):
                gr.Markdown(API_HELP)
                api_conversation = gr.Code(EXAMPLE, language="json", label="conversation (JSON)",
                                           lines=6, interactive=True)
                api_images = gr.File(file_count="multiple", file_types=["image"],
                                     label="images (matched to image parts by file name)")
                with gr.Row():
                    api_excluded = gr.Textbox(label="excluded (e.g. S2,S3)", max_lines=1)
                    api_threshold = gr.Number(value=threshold, label="threshold")
                    api_pg_preprocessing = gr.Dropdown(
                        list(PREPROCESSING), value=prompt_guard_preprocessing,
                        label="prompt_guard_preprocessing")
                api_only_one = gr.Checkbox(label="only_one (sweep: also try each category alone)")
                with gr.Row():
                    api_button = gr.Button("Moderate", variant="primary")
                    api_explore = {name: gr.Button(label) for name, label in (
                        ("sweep", "Sweep"), ("category_scores", "Category scores"),
                        ("attribution", "Attribution"))}
                api_result = gr.JSON(label="result")

        edit_outputs.extend([editing, text, pending, role, add_button, cancel_button])

        # ---- handlers: each returns {component: value} ----

        def refresh(turn_list, pending_list, editing_index):
            images = editor.has_images(turn_list, pending_list)
            return {summary: editor.summary_html(turn_list, pending_list, editing_index,
                                                 max_images),
                    categories: gr.CheckboxGroup(choices=category_choices(images, family))}

        def composer_reset(turn_list):
            return {editing: None, text: "", pending: [], role: gr.Radio(
                        value=editor.next_role(turn_list), interactive=True),
                    add_button: gr.Button("Add turn"), cancel_button: gr.Button(visible=False)}

        @guarded
        def on_add(turn_list, role_value, text_value, pending_list, editing_index):
            new = editor.commit_turn(turn_list, role_value, text_value, pending_list,
                                     editing=editing_index, max_images=max_images)
            return {turns: new, **composer_reset(new)}

        def start_edit(index, turn_list):
            turn = turn_list[index]
            return {editing: index, text: turn["text"], pending: list(turn["images"]),
                    role: gr.Radio(value=turn["role"], interactive=False),
                    add_button: gr.Button(f"Save turn {index + 1}"),
                    cancel_button: gr.Button(visible=True)}

        def remove_turn(index, turn_list, editing_index):
            return {turns: editor.delete_turn(turn_list, index),
                    editing: None if editing_index == index else editing_index}

        def remove_image(turn_index, image_index, turn_list):
            return {turns: editor.remove_image(turn_list, turn_index, image_index)}

        def remove_pending(index, pending_list):
            return {pending: [p for j, p in enumerate(pending_list) if j != index]}

        @guarded
        def on_upload(turn_list, pending_list, upload_value, editing_index):
            path = upload_value.get("path") if isinstance(upload_value, dict) else upload_value
            return {pending: editor.add_image(turn_list, pending_list, path,
                                              editing=editing_index, max_images=max_images)}

        def load_example(name):
            new = example_turns(name, swatches)
            return {turns: new, **composer_reset(new), last: None,
                    results_view: results.results_html(None, threshold)}

        @guarded
        def on_custom_add(custom_list, name, description):
            new = add_custom(custom_list, name, description)
            return {custom: new, custom_view: results.custom_html(new, family), custom_name: "",
                    custom_description: ""}

        @guarded
        def on_run(turn_list, ticked, custom_list, threshold_value, pg_choice, firewall=False):
            run = run_guards(guards, prompt_guards, turn_list, ticked, custom_list,
                             threshold_value, pg_choice, max_images=max_images,
                             pg_preprocessing="llamafirewall" if firewall else "none")
            for note in run["notes"]:
                gr.Warning(html.escape(note, quote=False))  # toasts render HTML
            out = {last: run, prompt_view: run["prompt"], json_view: run["result"],
                   results_view: show_results(run, threshold_value)}
            if review is not None:
                out.update(review.after_run(run, threshold_value))
            return out

        def show_results(run, threshold_value):
            if not run:
                return results.results_html(None, threshold_value)
            return results.results_html(run["result"], threshold_value, run["turns"],
                                        pg_label=run["pg_label"], notes=run["notes"],
                                        family=family)

        def on_threshold(run, threshold_value):
            return {results_view: show_results(run, threshold_value)}

        @guarded
        def on_moderate(conversation, images, excluded, threshold_value, pg_preprocessing=None):
            return moderate_api(guards, conversation, images, excluded, threshold_value,
                                default_threshold=threshold, max_images=max_images,
                                prompt_guard_preprocessing=pg_preprocessing)

        # ---- listeners ----
        for button, example in zip(example_buttons, EXAMPLES, strict=True):
            slug = re.sub(r"\W+", "_", example.name.lower())
            button.click(functools.partial(load_example, example.name), None,
                         [turns, last, results_view, *edit_outputs],
                         api_name=f"example_{slug}")
        for state in (turns, pending, editing):
            state.change(refresh, [turns, pending, editing], [summary, categories], **private)
        add_button.click(on_add, [turns, role, text, pending, editing],
                         [turns, *edit_outputs], api_name="add_turn")
        cancel_button.click(lambda t: composer_reset(t), [turns], edit_outputs,
                            api_name="cancel_edit")
        clear_button.click(lambda: {turns: [], **composer_reset([]), last: None},
                           None, [turns, last, *edit_outputs], api_name="clear_conversation")
        upload.upload(on_upload, [turns, pending, upload, editing], [pending],
                      api_name="attach_image", preprocess=False).then(lambda: None, None, [upload], **private)
        all_button.click(lambda: list(codes), None, [categories], api_name="categories_all")
        none_button.click(lambda: [], None, [categories], api_name="categories_none")
        reset_button.click(lambda: {categories: list(codes), custom: [],
                                    custom_view: results.custom_html([], family)},
                           None, [categories, custom, custom_view], api_name="categories_reset")
        custom_add.click(on_custom_add, [custom, custom_name, custom_description],
                         [custom, custom_view, custom_name, custom_description],
                         api_name="add_custom_category")
        custom_clear.click(lambda: {custom: [], custom_view: results.custom_html([], family)},
                           None, [custom, custom_view], api_name="clear_custom_categories")
        run_outputs = [last, prompt_view, json_view, results_view]
        if review is not None:
            run_outputs += review.outputs
        run_button.click(on_run, [turns, categories, custom, slider, pg_radio, pg_firewall],
                         run_outputs,
                         api_name="run", concurrency_limit=concurrency, concurrency_id=GPU)
        slider.change(on_threshold, [last, slider], [results_view], api_name="apply_threshold")
        api_button.click(on_moderate, [api_conversation, api_images, api_excluded, api_threshold,
                                       api_pg_preprocessing], [api_result], api_name="moderate", concurrency_limit=concurrency,
                         concurrency_id=GPU)
        if review is not None:
            review.wire(last, slider, max_images)
        if browser is not None:
            reviewer_bar.wire()
            browser.wire()
        if tune is not None:
            from guard_app.tune import tab as tune_tab

            tune_tab.on_load(demo, reviewer_bar, tune)
        explore.wire(turns, categories, custom, slider,
                     functools.partial(explore_inputs, guards, max_images=max_images),
                     slot, concurrency=concurrency, concurrency_id=GPU)
        explore_ui.wire_api(api_explore, api_conversation, api_images, api_excluded,
                            api_threshold, api_only_one, api_result,
                            lambda: explore_inputs_api(guards), slot,
                            default_threshold=threshold, max_images=max_images,
                            concurrency=concurrency, concurrency_id=GPU)
        if evaluation is not None:
            evaluation.wire(demo, guards, categories,
                            functools.partial(excluded_codes, family=family),
                            concurrency=1, concurrency_id=EVAL,
                            judge_batch=eval_view.gpu_judge(slot))
        tools.register(guards, slot, default_threshold=threshold, max_images=max_images,
                       concurrency=concurrency, concurrency_id=GPU)
        tools.publish_only(demo)  # the page's plumbing leaves the API page and MCP

    demo.queue(default_concurrency_limit=None, max_size=serving.queue_size)
    share = fair.install(demo, groups=(GPU, EVAL), per_visitor=serving.per_visitor,
                         trust_proxy=serving.trust_proxy)
    demo.guard_lab_serving = serving  # launch() reads the upload limit from here
    demo.guard_lab_moderations = openai_api.Moderations(  # launch() installs its route
        guards, slot, share, family=family, threshold=threshold, max_images=max_images,
        concurrency=concurrency, queue_size=serving.queue_size, api_key=api_key)
    return demo


API_HELP = """
**Other clients.** The same server answers **`POST /v1/moderations`**, OpenAI's moderation API
(`OpenAI(base_url="http://127.0.0.1:7860/v1", api_key=...).moderations.create(input=...)`;
a conversation goes in as `extra_body={"messages": [...]}`), and is an **MCP server** at
`/gradio_api/mcp/` with three tools: `moderate`, `sweep` and `prompt_guard` (images as data
URLs). The README has an example of each.

**`/moderate`** runs both guards on a conversation and returns the same JSON as
`python -m guard classify`. The conversation is the chat-format message list; images are
uploaded files, matched to `{"type": "image", "path": "NAME"}` parts by file name (parts with
no path take the remaining uploads in order). `excluded` is a comma-separated list of codes.
An optional fifth parameter, `prompt_guard_preprocessing`, is `"none"` (the default: each
message as written, the model card's recipe) or `"llamafirewall"` (spacing tricks such as
`I g n o r e` collapsed first, as Meta's LlamaFirewall scanner does); the result says which
under `prompt_guard.preprocessing`.

```python
from gradio_client import Client, handle_file
client = Client("http://127.0.0.1:7860/")
result = client.predict(
    '[{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},'
    ' {"type": "image", "path": "red.png"}]}]',
    [handle_file("red.png")], "S2,S3", 0.5, api_name="/moderate")
print(result["verdict"], result["categories"], result["p_unsafe"])
```

**`/sweep`**, **`/category_scores`** and **`/attribution`** take the same conversation, images,
`excluded` and `threshold` (`/sweep` also `only_one`, to try each category alone) and return JSON
with a one-line `summary`:

- `/sweep`: `variants`, one per run ("all enabled", "without S1", ...; "only S1", ... with
  `only_one`), each with `verdict`, `categories`, `p_unsafe` and `flips` (the verdict differs
  from "all enabled").
- `/category_scores`: the `verdict` and, per enabled category, `probability` (that the model
  names it first, given it answers unsafe; teacher-forced, not a calibrated risk) and `share`
  (the same renormalised over the enabled categories).
- `/attribution`: a variant per prefix ending at each message ("up to message 2") and per image
  left out ("without image 4 (message 1)"); `flips` compares with the whole conversation.

```python
sweep = client.predict('[{"role": "user", "content": "..."}]', [], "", 0.5, False,
                       api_name="/sweep")
print(sweep["summary"])  # e.g. "Excluding S1 flips the verdict to safe."
```

**`/evaluate`** and **`/compare_runs`** drive the Batch evaluation tab (when the server keeps a
labels database).
"""


def _reviewer_bar(gate: Any):
    """`gate` is a guard_app.reviewers.ReviewerGate; None: no accounts, everyone reviews."""
    from guard_app.reviewers import ReviewerGate
    from guard_app.ui_labels import ReviewerBar

    return ReviewerBar(gate if gate is not None else ReviewerGate())


def _review_panel(store: Any, bar: Any):
    from guard_app.ui_labels import ReviewPanel

    return ReviewPanel(store, bar)


def explore_inputs_api(guards: Guards) -> Any:
    if guards.llama_guard is None:
        raise ModelLoadError("Llama Guard is not loaded on this server; see the banner on its "
                             "page.")
    return guards.llama_guard


def _eval_tab(store: Any, builtins: dict, threshold: float, family: Family, bar: Any):
    from guard_app.eval_ui import EvalTab

    if store is None:
        gr.Markdown("Batch evaluation stores its runs in the labels database, which is off on "
                    "this server. Start the app with `--db PATH` (or set `GUARD_LAB_DB`).")
        return None
    return EvalTab(store, builtins=builtins, category_choices=category_choices(False, family),
                   codes=tuple(c.code for c in categories_for(family)), threshold=threshold,
                   family=family, bar=bar)


def _tune_tab(tuner: Any, tune_off: str, bar: Any):
    from guard_app.tune import tab

    return tab.build(tuner, bar, unavailable=tune_off or "Tuning is off on this server.")


def _labels_tab(store: Any, bar: Any):
    from guard_app.ui_labels import LabelsBrowser

    if store is None:
        gr.Markdown("Labelling is off on this server. Start the app with `--db PATH` (or set "
                    "`GUARD_LAB_DB`) to save reviewed examples, then browse and export them here.")
        return None
    return LabelsBrowser(store, bar)


def _gate(options: Any):
    from guard_app.reviewers import ReviewerGate

    return ReviewerGate.from_config(options.reviewers, on_space=options.on_space)


def launch(demo: gr.Blocks, *, family: Family | str = Family.LLAMA_GUARD_4, **kwargs: Any):
    """Start the server with the page's style (Gradio 6 takes css, head and theme here), its
    MCP server (/gradio_api/mcp/) and POST /v1/moderations on the same FastAPI app.

    `family` is the loaded Llama Guard's: the category tooltips come from its table.
    """
    serving = getattr(demo, "guard_lab_serving", None) or Serving()
    kwargs.setdefault("max_file_size", serving.max_file_size)
    kwargs.setdefault("mcp_server", True)
    hold = not kwargs.pop("prevent_thread_lock", False)
    # Gradio creates its FastAPI app inside launch(): start without blocking, add the route,
    # then block as launch() itself would have.
    with warnings.catch_warnings():
        # About State inputs of endpoints it would serve as MCP tools: only the three typed
        # tools stay (serve_only_tools, below), and they have none.
        warnings.filterwarnings("ignore", "This MCP server includes a tool that has a gr.State")
        started = demo.launch(css=CSS, head=head(family), theme=gr.themes.Soft(),
                              footer_links=["api"], prevent_thread_lock=True, **kwargs)
    tools.serve_only_tools(demo)
    moderations = getattr(demo, "guard_lab_moderations", None)
    served = getattr(demo, "server_app", None)  # the FastAPI app launch() serves
    if moderations is not None and served is not None:
        moderations.install_routes(served)
    if hold:
        demo.block_thread()
    return started


def open_store(db: Path | None) -> Any:
    """The labels store, restored from its backup first when the file is missing (labels.backup).

    Snapshots then run on their interval and once more when the process ends (SIGTERM too, which
    is how a Space is stopped).
    """
    if db is None:
        return None
    import signal
    import sys

    from labels import Store
    from labels.backup import BackupError, from_environ

    try:
        backups = from_environ(db)
        if backups is not None:
            backups.restore_if_missing()  # before Store creates the file
    except (ValueError, BackupError) as exc:
        raise SystemExit(f"Labels backup: {exc}") from None
    store = Store(db)
    if backups is not None:
        backups.start()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the final snapshot runs
    return store


def main(argv: Sequence[str] | None = None) -> None:
    from guard.cli import _quiet_transformers
    from guard.versions import check_or_exit
    from guard_app.config import parse_options
    from guard_app.models import load_models
    from guard_app.tune.logic import tuner_for

    options = parse_options(argv)
    check_or_exit()
    store = open_store(options.db)  # before the models: a bad backup setting fails fast
    _quiet_transformers()
    loaded = load_models(options)
    if gpu.spaces is not None and loaded.prompt_guards is not None:
        loaded.prompt_guards.load_all()  # ZeroGPU forks workers: load before, not in, them
    gate = _gate(options)
    tuner, tune_off = tuner_for(store, options.engines, loaded.guards.llama_guard, db=options.db,
                                zero_gpu=gpu.spaces is not None,
                                public_without_accounts=options.on_space and not gate.restricted)
    demo = build_demo(loaded.guards, prompt_guards=loaded.prompt_guards,
                      default_prompt_guard=loaded.default_prompt_guard, store=store,
                      tiny=options.tiny, failures=loaded.failures, threshold=options.threshold,
                      max_images=options.max_images, concurrency=options.concurrency,
                      data_dir=options.data_dir, reviewers=gate,
                      serving=options.serving, api_key=options.api_key,
                      prompt_guard_preprocessing=options.prompt_guard_preprocessing,
                      tuner=tuner, tune_off=tune_off)
    launch(demo, family=engine_family(loaded.guards), server_name=options.host,
           server_port=options.port)


if __name__ == "__main__":
    main()
