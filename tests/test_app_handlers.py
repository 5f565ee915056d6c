"""The app's handlers without a browser: editor rules, /moderate input, runs, results, options."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.core.errors import GuardError, InvalidConversation, ModelLoadError
from guard.engines.service import Guards
from guard.testing.tiny import BENIGN, JAILBREAK, PICTURE, VIOLENT, filler
from guard_app.api import logic as api_logic
from guard_app.api.logic import build_conversation, match_uploads, parse_excluded, parse_threshold
from guard_app.config import parse_options
from guard_app.guarded import guarded
from guard_app.models import PromptGuardChoices
from guard_app.moderate import editor, results
from guard_app.moderate import logic as moderate
from guard_app.moderate.examples import EXAMPLE_NAMES, example_turns


def user(text, *images):
    return {"role": "user", "text": text, "images": list(images)}


def test_roles_alternate_and_start_with_the_user():
    assert editor.next_role([]) == "user"
    turns = editor.commit_turn([], "user", "  hello ", [])
    assert turns == [user("hello")]
    assert editor.next_role(turns) == "assistant"
    with pytest.raises(InvalidConversation, match="next one is a assistant turn"):
        editor.commit_turn(turns, "user", "again", [])
    with pytest.raises(InvalidConversation, match="starts with the user"):
        editor.commit_turn([], "assistant", "hi", [])
    turns = editor.commit_turn(turns, "assistant", "hi there", [])
    assert [t["role"] for t in turns] == ["user", "assistant"]


def test_a_turn_with_images_needs_text(swatches):
    with pytest.raises(InvalidConversation, match="images but no text"):
        editor.commit_turn([], "user", " ", [swatches["red"]])
    with pytest.raises(InvalidConversation, match="empty"):
        editor.commit_turn([], "user", "", [])


def test_at_most_max_images_and_the_turn_being_edited_counts_once(swatches):
    red = swatches["red"]
    turns = [user("pics", red, red, red), {"role": "assistant", "text": "ok", "images": []}]
    pending = editor.add_image(turns, [], red)
    pending = editor.add_image(turns, pending, red)
    assert editor.image_count(turns, pending) == 5
    with pytest.raises(InvalidConversation, match="at most 5 images"):
        editor.add_image(turns, pending, red)
    with pytest.raises(InvalidConversation, match="at most 3 images"):
        editor.add_image(turns, [], red, max_images=3)
    # Editing turn 0: its three images sit in the composer, not twice in the count.
    assert editor.image_count(turns, [red, red, red], editing=0) == 3


def test_add_image_refuses_a_file_that_is_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(GuardError, match="not an image"):
        editor.add_image([], [], str(bad))


def test_edit_delete_and_remove_image(swatches):
    red, blue = swatches["red"], swatches["blue"]
    turns = [user("one", red, blue), {"role": "assistant", "text": "two", "images": []}]
    edited = editor.commit_turn(turns, "ignored", "one, edited", [blue], editing=0)
    assert edited[0] == user("one, edited", blue)
    assert turns[0] == user("one", red, blue)  # the input list is not changed
    assert editor.remove_image(turns, 0, 0)[0]["images"] == [blue]
    assert editor.delete_turn(turns, 1) == [user("one", red, blue)]
    # Deleting the first turn leaves an assistant turn first: explained, not hidden.
    left = editor.delete_turn(turns, 0)
    assert "must be a user message" in editor.problem(left)
    assert "must be a user message" in editor.summary_html(left, [], None)


def test_turn_text_is_escaped():
    shown = editor.turn_html(0, user('<script>alert(1)</script><img src=x onerror="x()">'))
    assert "<script>" not in shown and "<img" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;x()&quot;&gt;" in shown


def test_every_example_loads_and_is_valid(swatches):
    for name in EXAMPLE_NAMES:
        turns = example_turns(name, swatches)
        assert editor.problem(turns) == ""
        editor.to_conversation(turns)


@pytest.mark.parametrize(("name", "verdict", "codes", "pg_max_above_half"), [
    ("Benign question", "safe", [], False),
    ("Harmful request", "unsafe", ["S1"], False),
    ("Harmful assistant answer", "unsafe", ["S2"], False),
    ("Jailbreak attempt", "safe", [], True),
    ("Conversation with an image", "unsafe", ["S1"], False),
    ("Harmless image", "safe", [], False),
])
def test_examples_give_their_known_answers(guards, swatches, name, verdict, codes,
                                           pg_max_above_half):
    run = moderate.run_guards(guards, None, example_turns(name, swatches), moderate.CODES, [], 0.5, None)
    result = run.result
    assert (result["verdict"], [c["code"] for c in result["categories"]]) == (verdict, codes)
    assert (result["prompt_guard"]["max_p_malicious"] >= 0.5) is pg_max_above_half
    assert run.prompt.startswith("<|begin_of_text|>")


def test_unticked_categories_are_excluded(guards):
    run = moderate.run_guards(guards, None, [user(VIOLENT)], [c for c in moderate.CODES if c != "S1"],
                         [], 0.5, None)
    assert run.excluded == ["S1"]
    assert run.result["verdict"] == "safe"
    assert "S1: Violent Crimes" not in run.prompt
    empty = moderate.run_guards(guards, None, [user(BENIGN)], [], [], 0.5, None)
    assert any("No category is ticked" in n for n in empty.notes)


def test_custom_categories_go_into_the_prompt(guards):
    custom = moderate.add_custom([], "  Medical   misinformation. ", "False health claims.")
    assert custom == [{"name": "Medical misinformation", "description": "False health claims."}]
    with pytest.raises(GuardError, match="already"):
        moderate.add_custom(custom, "medical misinformation", "")
    with pytest.raises(GuardError, match="short name"):
        moderate.add_custom(custom, " ", "")
    run = moderate.run_guards(guards, None, [user(BENIGN)], moderate.CODES, custom, 0.5, None)
    assert "S15: Medical misinformation.\nFalse health claims." in run.prompt
    assert "S15" in run.result["enabled_categories"]


def test_prompt_guard_choices_in_tiny_mode_map_to_one_model(guards):
    choices = PromptGuardChoices.fixed(guards.prompt_guard, tiny=True)
    assert choices.choices == [("86M (tiny test model)", "86m"), ("22M (tiny test model)", "22m")]
    assert choices.get("22m") is guards.prompt_guard
    run = moderate.run_guards(Guards(guards.llama_guard, None), choices, [user(JAILBREAK)], moderate.CODES,
                         [], 0.5, "22m")
    assert run.result["prompt_guard"]["messages"][0]["p_malicious"] > 0.5
    assert run.pg_label == "22M (tiny test model)"


def test_a_prompt_guard_that_fails_to_load_is_a_note_not_a_crash(guards):
    def fail(source):
        raise ModelLoadError(f"Could not load {source}: gated.")

    choices = PromptGuardChoices({"86m": "meta-llama/x"}, fail)
    run = moderate.run_guards(Guards(guards.llama_guard, None), choices, [user(BENIGN)], moderate.CODES,
                         [], 0.5, "86m")
    assert "prompt_guard" not in run.result
    assert run.notes == ["Prompt Guard 86m did not load: Could not load meta-llama/x: gated."]
    with pytest.raises(ModelLoadError, match="gated"):  # remembered, not retried
        choices.get("86m")
    with pytest.raises(ModelLoadError, match="No model is loaded"):
        moderate.run_guards(Guards(), None, [user(BENIGN)], moderate.CODES, [], 0.5, None)


def test_load_all_loads_every_choice_once_and_keeps_failures(guards):
    """ZeroGPU forks its workers from the server: every choice is loaded before them."""
    loaded = []

    def load(source):
        loaded.append(source)
        if source == "broken":
            raise ModelLoadError("Could not load broken.")
        return guards.prompt_guard

    choices = PromptGuardChoices({"86m": "good", "22m": "broken"}, load)
    choices.load_all()
    choices.load_all()
    assert loaded == ["good", "broken"] and choices.get("86m") is guards.prompt_guard
    with pytest.raises(ModelLoadError, match="broken"):
        choices.get("22m")


def test_long_turn_reports_the_window_that_fired(guards):
    long_text = filler(600) + " " + JAILBREAK
    run = moderate.run_guards(guards, None, [user(long_text)], moderate.CODES, [], 0.5, None)
    message = run.result["prompt_guard"]["messages"][0]
    assert (message["windows"], message["window"]) == (2, 1)
    shown = results.results_html(run.result, 0.5, run.turns)
    assert "in 2 windows; window 2 (tokens 511-" in shown


def test_results_follow_the_threshold_and_escape_names():
    result = {"p_unsafe": 0.7, "categories": [{"code": "S15", "name": "<b>x</b>"}],
              "model_label": "unsafe", "seconds": 0.1, "judged_role": "User",
              "raw_output": "unsafe\nS15", "llama_guard": {"device": "cpu"}}
    unsafe = results.results_html(result, 0.5)
    assert 'data-verdict="unsafe"' in unsafe and "&lt;b&gt;x&lt;/b&gt;" in unsafe
    safe = results.results_html(result, 0.8)
    assert 'data-verdict="safe"' in safe and "the score makes it safe" in safe


def test_banner_names_failed_models_and_test_mode():
    banner = results.banner_html(True, {"Llama Guard 4": "Could not load <x>: gated."}, {})
    assert "Test models." in banner and "verdicts mean nothing" in banner
    assert "Llama Guard 4 did not load." in banner and "&lt;x&gt;" in banner


def test_uploads_match_image_parts_by_file_name(tmp_path, swatches):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    red.write_bytes(Path(swatches["red"]).read_bytes())
    blue.write_bytes(Path(swatches["blue"]).read_bytes())
    messages = [{"role": "user", "content": [
        {"type": "text", "text": PICTURE}, {"type": "image", "path": "pics/blue.png"},
        {"type": "image"}]}]
    rewritten, images = match_uploads(messages, [str(red), str(blue)])
    parts = rewritten[0]["content"]
    assert images[parts[1]["path"]] == str(blue)
    assert images[parts[2]["path"]] == str(red)  # no path: the upload no part named
    conversation = build_conversation(messages, [str(red), str(blue)])
    assert len(conversation.images) == 2


def test_moderate_input_errors_say_what_to_do(tmp_path, swatches):
    with pytest.raises(InvalidConversation, match="not valid JSON"):
        build_conversation("[{", None)
    with pytest.raises(InvalidConversation, match="No conversation"):
        build_conversation("", None)
    image_part = '[{"role": "user", "content": [{"type": "text", "text": "x"}, ' \
                 '{"type": "image", "path": "/etc/secret.png"}]}]'
    with pytest.raises(InvalidConversation, match="was not uploaded"):
        build_conversation(image_part, None)
    with pytest.raises(InvalidConversation, match="match no image part"):
        build_conversation('[{"role": "user", "content": "hi"}]', [swatches["red"]])
    with pytest.raises(GuardError, match="between 0 and 1"):
        parse_threshold(2)
    assert parse_threshold(None, 0.4) == 0.4
    assert parse_excluded("s1, S2") == parse_excluded(["S1", "s2"]) == ("S1", "S2")


def test_moderate_api_returns_the_classify_json(guards, swatches, tmp_path):
    red = tmp_path / "red.png"
    red.write_bytes(Path(swatches["red"]).read_bytes())
    conversation = ('[{"role": "user", "content": [{"type": "text", "text": "What is in this '
                    'picture?"}, {"type": "image", "path": "red.png"}]}]')
    result = api_logic.moderate_api(guards, conversation, [str(red)], "S2,S3", None)
    assert (result["verdict"], result["categories"]) == (
        "unsafe", [{"code": "S1", "name": "Violent Crimes"}])
    assert result["excluded"] == ["S2", "S3"]
    assert set(result) >= {"p_unsafe", "prompt_guard", "timings", "llama_guard", "judged_role"}


def test_guarded_turns_engine_errors_into_page_errors():
    import gradio as gr

    @guarded
    def fails():
        raise InvalidConversation("Add a user message first.")

    with pytest.raises(gr.Error, match="Add a user message first."):
        fails()


def test_options_from_flags_and_environment(tmp_path):
    options = parse_options([], {"GUARD_LAB_NO_LABELS": "1"})
    assert (options.host, options.port, options.threshold, options.max_images) == (
        "127.0.0.1", 7860, 0.5, 5)
    assert (options.engines.llama_guard, options.engines.prompt_guard, options.db) == (
        "meta-llama/Llama-Guard-4-12B", "86m", None)
    env = {"SPACE_ID": "me/guard-lab", "GUARD_LAB_TINY": "1", "GUARD_LAB_TINY_DIR": str(tmp_path),
           "GUARD_LAB_THRESHOLD": "0.3", "GUARD_LAB_MAX_IMAGES": "3",
           "GUARD_LAB_DB": str(tmp_path / "l.db"), "GUARD_LAB_PORT": "9000",
           "GUARD_LAB_REVIEWERS": "ana:secret"}
    options = parse_options(["--port", "9001"], env)
    assert (options.host, options.port, options.threshold, options.max_images, options.tiny) == (
        "0.0.0.0", 9001, 0.3, 3, True)
    assert (options.engines.tiny_dir, options.db) == (tmp_path, tmp_path / "l.db")
    # A Space with neither Hugging Face sign-in nor accounts: no labels, and the banner says why.
    del env["GUARD_LAB_REVIEWERS"]
    public = parse_options([], env)
    assert public.db is None and "hf_oauth: true" in public.reviewers_off
    with pytest.raises(SystemExit):
        parse_options(["--max-images", "6"], {})
    with pytest.raises(SystemExit):
        parse_options(["--threshold", "1.5"], {})


def test_models_that_fail_to_load_become_banner_messages(tmp_path):
    from guard_app.models import load_models

    missing = str(tmp_path / "no-such-model")
    options = parse_options(["--llama-guard", missing, "--prompt-guard", missing], {
        "GUARD_LAB_NO_LABELS": "1"})
    loaded = load_models(options)
    assert loaded.guards.llama_guard is None and loaded.guards.prompt_guard is None
    assert set(loaded.failures) == {"Llama Guard 4", "Prompt Guard 2"}
    assert all(f"Could not load {missing}" in m for m in loaded.failures.values())


def test_review_saves_a_label_and_lists_it(guards, swatches, tmp_path):
    from guard_app.labeled import logic as labeled
    from guard_app.review import logic as review
    from labels import Store
    from labels.errors import InvalidLabel

    run = moderate.run_guards(guards, None, example_turns("Conversation with an image", swatches),
                         moderate.CODES, [], 0.5, None)
    assert review.default_label(run.result, 0.5, True) == ("unsafe", ["S1"])
    assert review.default_label(run.result, 0.5, False) == ("safe", [])
    with Store(tmp_path / "labels.db") as store:
        with pytest.raises(InvalidLabel, match="marked the model right"):
            review.save_review(store, run, 0.5, reviewer="ana", model_right="right",
                               label="safe", categories=[], note="", max_images=5)
        saved = review.save_review(store, run, 0.5, reviewer="ana", model_right="wrong",
                                   label="safe", categories=[], note="a red square", max_images=5)
        assert saved.new_example
        rows = review.list_rows(store, disagreement=True)
        assert [(r[0], r[3], r[4], r[7], r[9]) for r in rows] == [
            (saved.example_id, 1, "unsafe", "safe", "yes")]
        path, count = labeled.export_file(store, "jsonl", folder=tmp_path / "out")
        assert count == 1 and Path(path).read_text().count("\n") == 1
