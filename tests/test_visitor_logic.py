"""The visitor's page without a browser (issue 22): a run that goes out of date, the kept copy
of the conversation, plain words in the result, folded long turns, names without folders."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from guard.core.errors import InvalidConversation
from guard_app.api.tab import PLACEHOLDER, api_help
from guard_app.moderate import editor, kept, results
from guard_app.run import OUT_OF_DATE, PageRun, fingerprint, model_name, out_of_date
from labels.errors import InvalidLabel

TURNS = [{"role": "user", "text": "How do I bake bread?", "images": []}]
CODES = ["S1", "S2", "S3"]


def run_on(turns, ticked, **settings) -> PageRun:
    return PageRun(result={"p_unsafe": 0.1}, prompt="", notes=[], turns=turns, excluded=[],
                   custom=[], fingerprint=fingerprint(turns, ticked, [], **settings))


def test_a_run_goes_out_of_date_when_what_it_ran_on_changes_and_back_when_restored():
    run = run_on(TURNS, CODES, pg_choice="86m")
    assert not out_of_date(run, fingerprint(TURNS, list(reversed(CODES)), [], pg_choice="86m"))
    changed = {
        "conversation": fingerprint([*TURNS, {"role": "assistant", "text": "Mix.", "images": []}],
                                    CODES, [], pg_choice="86m"),
        "an edited turn": fingerprint([dict(TURNS[0], text="How do I bake rye?")], CODES, [],
                                      pg_choice="86m"),
        "an image": fingerprint([dict(TURNS[0], images=["/tmp/red.png"])], CODES, [],
                                pg_choice="86m"),
        "categories": fingerprint(TURNS, CODES[:2], [], pg_choice="86m"),
        "custom categories": fingerprint(TURNS, CODES, [{"name": "Spam", "description": ""}],
                                         pg_choice="86m"),
        "the model": fingerprint(TURNS, CODES, [], pg_choice="22m"),
        "the reading": fingerprint(TURNS, CODES, [], pg_choice="86m", firewall=True),
        "the policy": fingerprint(TURNS, CODES, [], pg_choice="86m", policy="no-s1@1"),
    }
    assert {what: out_of_date(run, now) for what, now in changed.items()} == dict.fromkeys(
        changed, True)
    assert not out_of_date(None, changed["conversation"])  # nothing shown, nothing stale
    # A run made outside the page (no fingerprint) is never called stale.
    assert not out_of_date(PageRun({"p_unsafe": 0.1}, "", [], TURNS, [], []), "anything")


def test_saving_a_review_of_an_out_of_date_run_is_refused_with_a_message_that_says_so():
    """What ReviewPanel's save does before it stores anything."""
    run = run_on(TURNS, CODES)

    def save(now):
        if out_of_date(run, now):
            raise InvalidLabel(OUT_OF_DATE)
        return "saved"

    with pytest.raises(InvalidLabel, match="out of date.*Run both guards again"):
        save(fingerprint(TURNS, CODES[:1], []))
    assert save(fingerprint(TURNS, CODES, [])) == "saved"


def png(colour=(200, 0, 0), size=8) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def test_the_kept_copy_brings_back_the_turns_images_and_settings(tmp_path):
    picture = tmp_path / "red.png"
    picture.write_bytes(png())
    turns = [{"role": "user", "text": "What is in this picture?", "images": [str(picture)]},
             {"role": "assistant", "text": "A red square.", "images": []}]
    settings = {"ticked": ["S1"], "custom": [], "threshold": 0.4, "policy": None, "pg": "22m",
                "firewall": True}
    copy, said = kept.keep(turns, settings)
    assert said == ""
    back, saved, lost = kept.restore(copy)
    assert (saved, lost) == (settings, "")
    assert [(t["role"], t["text"], len(t["images"])) for t in back] == [
        ("user", "What is in this picture?", 1), ("assistant", "A red square.", 0)]
    assert Path(back[0]["images"][0]).read_bytes() == picture.read_bytes()
    assert back[0]["images"][0].endswith(".png")


def test_what_does_not_fit_the_kept_copy_is_left_out_and_said(tmp_path):
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    small.write_bytes(png())
    big.write_bytes(png(size=400) + b"\0" * 5000)
    turns = [{"role": "user", "text": "Two pictures.", "images": [str(small), str(big)]}]
    copy, said = kept.keep(turns, {}, image_bytes=len(small.read_bytes()) + 10)
    assert "1 image of this conversation is too large to keep" in said
    assert len(copy["turns"][0]["images"]) == 1
    copy, said = kept.keep(turns, {"ticked": ["S1"]}, text_chars=5)
    assert copy["turns"] == [] and copy["settings"] == {"ticked": ["S1"]}
    assert "too long to keep" in said and "settings are kept" in said
    # Nothing kept, an old format, or an image that no longer decodes.
    assert kept.restore(None) == ([], {}, "")
    assert kept.restore({"v": 0, "turns": TURNS}) == ([], {}, "")
    broken = {"v": kept.VERSION, "settings": {}, "turns": [
        {"role": "user", "text": "x", "images": [base64.b64encode(b"not an image").decode()]}]}
    back, _, lost = kept.restore(broken)
    assert back[0]["images"] == [] and "1 kept image could not be read back" in lost


def result(**extra):
    base = {"p_unsafe": 0.9, "categories": [{"code": "S1", "name": "Violent Crimes"}],
            "model_label": "unsafe", "seconds": 0.1, "judged_role": "User", "raw_output": "",
            "llama_guard": {"device": "cpu", "name": "/srv/models/llama-guard-4-tiny"}}
    return {**base, **extra}


def test_the_verdict_in_words_with_a_harm_score_and_the_details_folded():
    card = results.llama_guard_html(result(), 0.5)
    assert ">unsafe: S1 Violent Crimes</div>" in card
    assert "harm score <b class=\"gl-harm\">0.90</b>" in card and "p_unsafe" in card
    assert "<details class=\"gl-more\">" in card
    assert "/srv/models" not in card and "llama-guard-4-tiny" in card  # no server folders
    assert ">safe</div>" in results.llama_guard_html(result(p_unsafe=0.1), 0.5)
    assert ">unsafe (no category named)</div>" in results.llama_guard_html(
        result(categories=[]), 0.5)


def test_one_plain_sentence_when_the_model_names_only_excluded_categories():
    safe = results.llama_guard_html(result(categories=[], excluded_codes=["S1"],
                                           decision={"verdict": "safe"}), 0.5)
    assert ("The model answered unsafe, but only for categories this policy leaves out (S1), "
            "so the policy decides safe.") in safe
    kept_unsafe = results.llama_guard_html(result(categories=[], excluded_codes=["S1"],
                                                  decision={"verdict": "unsafe"}), 0.5)
    assert "this policy still counts such an answer as unsafe" in kept_unsafe
    assert "gl-excluded-only" not in results.llama_guard_html(result(), 0.5)


def prompt_guard(p):
    return {"messages": [{"index": 0, "role": "user", "p_malicious": p, "seconds": 0.01,
                          "tokens": 5, "windows": 1, "window": 0}],
            "max_p_malicious": p, "name": "/srv/models/prompt-guard-2-tiny"}


def test_prompt_guard_in_words():
    attack = results.prompt_guard_html(prompt_guard(0.97))
    assert "looks like a jailbreak / injection (score 0.97)" in attack
    assert 'data-verdict="malicious"' in attack and "p_malicious" in attack
    assert "/srv/models" not in attack
    assert "looks benign (score 0.02)" in results.prompt_guard_html(prompt_guard(0.02))


def test_an_out_of_date_result_is_marked():
    shown = results.results_html(result(), 0.5, stale=True)
    assert 'id="gl-stale"' in shown and "Out of date." in shown and "gl-out-of-date" in shown
    assert "gl-stale" not in results.results_html(result(), 0.5)


def test_long_turns_are_folded_with_show_all():
    long = "word " * 40_000
    shown = editor.turn_html(0, {"role": "user", "text": long, "images": []})
    assert '<details class="gl-fold">' in shown and "show all (200,000 characters)" in shown
    assert len(shown.split("<summary>")[1].split("</summary>")[0]) < 1_000
    short = editor.turn_html(0, {"role": "user", "text": "<b>hi</b>", "images": []})
    assert "gl-fold" not in short and "&lt;b&gt;hi&lt;/b&gt;" in short
    many_lines = editor.turn_html(0, {"role": "user", "text": "x\n" * 30, "images": []})
    assert "gl-fold" in many_lines


def test_refusals_of_the_composer_are_messages():
    with pytest.raises(InvalidConversation, match="The message is empty"):
        editor.commit_turn([], "user", "  ", [])
    note = results.refused_image_html("fake.png is not an image <x>.")
    assert 'id="gl-refused-image"' in note and "&lt;x&gt;" in note


def test_model_names_lose_the_servers_folders_but_hub_ids_stay():
    assert model_name("/work/main/.cache/tiny/llama-guard-4-tiny") == "llama-guard-4-tiny"
    assert model_name("./models/pg/") == "pg"
    assert model_name("C:\\models\\guard") == "guard"
    assert model_name("meta-llama/Llama-Guard-4-12B") == "meta-llama/Llama-Guard-4-12B"
    assert model_name("Llama-Guard-3-1B.gguf") == "Llama-Guard-3-1B.gguf"


def test_the_api_help_names_the_address_the_page_is_served_from():
    shown = api_help("https://guard.example.org/lab/")
    assert 'Client("https://guard.example.org/lab/")' in shown
    assert 'base_url="https://guard.example.org/lab/v1"' in shown
    assert "127.0.0.1:7860" not in shown
    assert PLACEHOLDER in api_help(None) and PLACEHOLDER in api_help("javascript:alert(1)")


def test_the_shown_json_names_the_models_without_folders():
    from guard_app.run import shown_result

    raw = {"model": "/srv/m/llama-guard-4-tiny (int8)", "p_unsafe": 0.2,
           "llama_guard": {"name": "/srv/m/llama-guard-4-tiny", "device": "cpu"},
           "prompt_guard": {"name": "/srv/m/prompt-guard-2-tiny", "messages": []}}
    shown = shown_result(raw)
    assert shown["model"] == "llama-guard-4-tiny (int8)"
    assert shown["llama_guard"] == {"name": "llama-guard-4-tiny", "device": "cpu"}
    assert shown["prompt_guard"]["name"] == "prompt-guard-2-tiny"
    assert raw["model"].startswith("/srv")  # the run itself keeps what the engine said
