"""The app on another Llama Guard engine: options, loading, the page, /moderate and the explorer.

The llama.cpp tests run the tiny Llama Guard 3 stand-in's GGUF (guard/tiny_text.py): the same
verdicts as on transformers, with the page saying which engine runs and what it cannot do.
"""

from __future__ import annotations

import importlib.util
import json

import gradio as gr
import pytest
from helpers import tiny_cache_dir

import app
from guard.core.categories import Family
from guard.engines.loading import load_llama_guard
from guard.engines.service import Guards
from guard.testing.tiny import BENIGN, PICTURE, VIOLENT, WEAPON
from guard.testing.tiny_text import TEXT_EXAMPLES, expected
from guard_app.config import parse_options
from guard_app.models import load_models
from guard_app.moderate.logic import PageRun

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (pip install llama-cpp-python); CI installs it")
OPENAI = {"GUARD_LAB_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
          "GUARD_LAB_OPENAI_MODEL": "meta-llama/Llama-Guard-3-8B",
          "GUARD_LAB_OPENAI_API_KEY": "sk-secret"}


def user(text, *images):
    return {"role": "user", "text": text, "images": list(images)}


def handler(demo, api_name):
    """The function behind a listener, as Gradio calls it (errors already turned into gr.Error)."""
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def component(demo, elem_id):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def run_state(out):
    """The run the handler keeps in its gr.State: the moderate() JSON, the prompt, the notes."""
    return next(v for v in out.values() if isinstance(v, PageRun))


# ---- options ------------------------------------------------------------------------------------

def test_the_engine_defaults_to_transformers():
    options = parse_options([], {"GUARD_LAB_NO_LABELS": "1"})
    assert (options.engines.engine, options.engines.gguf, options.engines.family, options.engines.threads, options.engines.n_ctx) == (
        "transformers", None, None, None, 8192)


def test_engine_options_from_the_environment_and_flags_over_them():
    env = {"GUARD_LAB_NO_LABELS": "1", "GUARD_LAB_ENGINE": "llama-cpp",
           "GUARD_LAB_GGUF": "QuantFactory/Meta-Llama-Guard-2-8B-GGUF:*Q4_K_M.gguf",
           "GUARD_LAB_FAMILY": "llama-guard-2", "GUARD_LAB_THREADS": "4"}
    options = parse_options([], env)
    assert (options.engines.engine, options.engines.gguf, options.engines.family, options.engines.threads, options.engines.n_ctx) == (
        "llama-cpp", "QuantFactory/Meta-Llama-Guard-2-8B-GGUF:*Q4_K_M.gguf",
        Family.LLAMA_GUARD_2, 4, 8192)
    options = parse_options(["--gguf", "guard.gguf", "--family", "llama-guard-3", "--threads", "2",
                             "--n-ctx", "4096"], env)
    assert (options.engines.gguf, options.engines.family, options.engines.threads, options.engines.n_ctx) == (
        "guard.gguf", Family.LLAMA_GUARD_3, 2, 4096)
    options = parse_options(["--engine", "openai"], {**env, **OPENAI})
    assert (options.engines.engine, options.engines.openai_env) == ("openai", OPENAI)
    assert "sk-secret" not in repr(options)


def test_tiny_with_llama_cpp_needs_no_gguf(tmp_path):
    options = parse_options(["--tiny", "--engine", "llama-cpp", "--no-labels"],
                            {"GUARD_LAB_TINY_DIR": str(tmp_path)})
    assert (options.engines.tiny, options.engines.tiny_dir, options.engines.engine, options.engines.gguf) == (
        True, tmp_path, "llama-cpp", None)


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--engine", "llama-cpp"], {}, "--engine llama-cpp needs --gguf"),
    (["--engine", "openai"], {}, "--engine openai needs GUARD_LAB_OPENAI_BASE_URL"),
    ([], {"GUARD_LAB_ENGINE": "vllm"}, "GUARD_LAB_ENGINE must be one of"),
    ([], {"GUARD_LAB_FAMILY": "llama-guard-1"}, "GUARD_LAB_FAMILY must be one of"),
    (["--engine", "llama-cpp", "--gguf", "g.gguf", "--threads", "0"], {}, "--threads must be"),
    (["--engine", "bogus"], {}, "invalid choice"),
])
def test_bad_engine_options_stop_with_the_reason(capsys, argv, env, message):
    with pytest.raises(SystemExit):
        parse_options([*argv, "--no-labels"], env)
    assert message in capsys.readouterr().err


def test_openai_options_give_the_server_engine_without_calling_it():
    options = parse_options(["--engine", "openai", "--no-labels"], OPENAI)
    engine = load_llama_guard(options.engines)
    info = engine.describe()
    assert (info.engine, info.name, info.family, info.device, info.multimodal) == (
        "openai", "meta-llama/Llama-Guard-3-8B", "llama-guard-3", "http://127.0.0.1:9/v1", False)


def test_a_gguf_that_does_not_load_is_a_banner_message(tmp_path):
    missing = str(tmp_path / "Llama-Guard-2-missing.gguf")
    loaded = load_models(parse_options(
        ["--engine", "llama-cpp", "--gguf", missing, "--prompt-guard", "none", "--no-labels"], {}))
    assert loaded.guards.llama_guard is None and loaded.prompt_guards is None
    assert list(loaded.failures) == ["Llama Guard 2"]


# ---- the page on llama.cpp ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(tiny_text):
    """What `python app.py --tiny --engine llama-cpp` loads."""
    loaded = load_models(parse_options(["--tiny", "--engine", "llama-cpp", "--no-labels"],
                                       {"GUARD_LAB_TINY_DIR": str(tiny_cache_dir())}))
    yield loaded
    if loaded.guards.llama_guard is not None:
        loaded.guards.llama_guard.close()


@pytest.fixture(scope="module")
def demo(loaded, tmp_path_factory):
    return app.build_demo(loaded.guards, prompt_guards=loaded.prompt_guards,
                          default_prompt_guard=loaded.default_prompt_guard, tiny=True,
                          failures=loaded.failures,
                          swatch_dir=str(tmp_path_factory.mktemp("page-swatches")))


@needs_llama_cpp
def test_tiny_llama_cpp_loads_the_stand_in_and_prompt_guard(loaded):
    info = loaded.guards.llama_guard.describe()
    assert (loaded.failures, info.engine, info.family, info.device, info.multimodal) == (
        {}, "llama-cpp", "llama-guard-3", "cpu", False)
    assert info.name.endswith("model-f32.gguf")
    assert loaded.guards.prompt_guard is not None


@needs_llama_cpp
def test_the_page_says_which_engine_and_model_run(demo, loaded):
    banner = component(demo, "gl-banner").value
    assert "did not load" not in banner
    assert "(Llama Guard 3) on llama-cpp, cpu" in banner
    assert "model-f32.gguf" in banner
    categories = component(demo, "gl-categories")
    assert categories.label == "Llama Guard 3 categories"
    assert [code for _, code in categories.choices] == [f"S{i}" for i in range(1, 15)]


@needs_llama_cpp
def test_run_on_llama_cpp_gives_the_trained_verdict(demo):
    _, answer = expected(TEXT_EXAMPLES["violent"], Family.LLAMA_GUARD_3)
    codes = [f"S{i}" for i in range(1, 15)]
    out = handler(demo, "run")([user(VIOLENT)], codes, [], 0.5, "86m")
    result = run_state(out).result
    assert (result["verdict"], [c["code"] for c in result["categories"]]) == ("unsafe", ["S1"])
    assert result["raw_output"].strip() == answer
    assert result["llama_guard"]["engine"] == "llama-cpp"
    assert "prompt_guard" in result
    html = component(demo, "gl-results")
    assert html in out and 'data-verdict="unsafe"' in out[html]


@needs_llama_cpp
def test_moderate_names_the_engine(demo):
    conversation = json.dumps([{"role": "user", "content": BENIGN}])
    result = handler(demo, "moderate")(conversation, None, "", 0.5)
    assert result["verdict"] == "safe"
    assert {k: result["llama_guard"][k] for k in ("engine", "family", "device", "multimodal")} == {
        "engine": "llama-cpp", "family": "llama-guard-3", "device": "cpu", "multimodal": False}


@needs_llama_cpp
def test_images_are_off_on_a_text_only_engine(demo):
    assert component(demo, "gl-upload").visible is False
    note = component(demo, "gl-images-off").value
    assert "Images are off" in note and "llama.cpp runs Llama Guard on text only" in note


@needs_llama_cpp
def test_images_on_a_text_only_engine_are_a_clear_page_error(demo, swatches):
    with pytest.raises(gr.Error, match="llama.cpp runs Llama Guard on text only"):
        handler(demo, "run")([user(PICTURE, swatches["red"])], ["S1"], [], 0.5, None)
    conversation = json.dumps([{"role": "user", "content": [
        {"type": "text", "text": PICTURE}, {"type": "image", "path": "red.png"}]}])
    with pytest.raises(gr.Error, match="this conversation has 1 image"):
        handler(demo, "moderate")(conversation, [swatches["red"]], "", 0.5)


@needs_llama_cpp
def test_sweep_runs_on_llama_cpp_and_category_scores_say_they_need_transformers(demo):
    conversation = json.dumps([{"role": "user", "content": VIOLENT}])
    others = ",".join(f"S{i}" for i in range(2, 15))
    sweep = handler(demo, "sweep")(conversation, None, others, 0.5, False)
    assert [(v["name"], v["verdict"]) for v in sweep["variants"]] == [
        ("all enabled", "unsafe"), ("without S1", "safe")]
    with pytest.raises(gr.Error, match="only the transformers engine gives; this server runs "
                                       "Llama Guard on llama-cpp"):
        handler(demo, "category_scores")(conversation, None, "", 0.5)


@needs_llama_cpp
def test_a_llama_guard_2_model_gets_its_own_eleven_categories(tiny_text, tmp_path):
    from guard.engines.llama_cpp_engine import LlamaCppGuard

    with LlamaCppGuard.load(tiny_text.gguf_f32, family="llama-guard-2", n_ctx=2048,
                            n_threads=1) as engine:
        demo = app.build_demo(Guards(engine, None), swatch_dir=str(tmp_path))
        categories = component(demo, "gl-categories")
        assert categories.label == "Llama Guard 2 categories"
        assert [code for _, code in categories.choices] == [f"S{i}" for i in range(1, 12)]
        assert categories.value == [f"S{i}" for i in range(1, 12)]
        assert "S8 Indiscriminate Weapons" in [label for label, _ in categories.choices]
        # Every one of the 11 ticked: nothing from Llama Guard 3/4's table is excluded.
        out = handler(demo, "run")([user(WEAPON)], categories.value, [], 0.5, None)
        result = run_state(out).result
        assert (result["verdict"], result["categories"], result["excluded"]) == (
            "unsafe", [{"code": "S8", "name": "Indiscriminate Weapons"}], [])
