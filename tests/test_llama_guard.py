"""End to end on the tiny Llama Guard 4: real processor, real generation, real logits."""

import threading

import pytest
import torch
from PIL import Image
from special_text import ATTACKS, HARMLESS, specials_in

from guard import ContextTooLong, Conversation, from_messages, render, user
from guard.core.conversation import assistant
from guard.engines.llama_guard import PATCHED_CHUNK_SIZE
from guard.testing.tiny import BLUE, BREAK_IN, LLAMA_GUARD_EXAMPLES, RED, GuardExample, swatch

EXAMPLES = list(LLAMA_GUARD_EXAMPLES.items())


@pytest.mark.parametrize("name, example", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_known_answers(llama_guard, name, example):
    verdict = llama_guard.classify(example.conversation(), example.excluded)
    assert verdict.raw_output.strip() == example.answer
    expected_unsafe = example.answer.startswith("unsafe")
    assert verdict.unsafe is expected_unsafe
    assert (verdict.p_unsafe > 0.9) if expected_unsafe else (verdict.p_unsafe < 0.1)
    assert verdict.category_codes == tuple(example.answer.split("\n")[1:2])
    assert verdict.images == len(example.conversation().images)


def test_batch_equals_one_by_one(llama_guard):
    conversations = [e.conversation() for _, e in EXAMPLES]
    excluded = [e.excluded for _, e in EXAMPLES]
    batch = llama_guard.classify_batch(conversations, excluded_per_item=excluded, batch_size=6)
    for (name, example), verdict in zip(EXAMPLES, batch, strict=True):
        single = llama_guard.classify(example.conversation(), example.excluded)
        assert verdict.raw_output == single.raw_output, name
        assert verdict.p_unsafe == pytest.approx(single.p_unsafe, abs=2e-3), name


def test_excluding_a_category_changes_prompt_and_verdict(llama_guard):
    conversation = LLAMA_GUARD_EXAMPLES["violent"].conversation()
    assert render(conversation) != render(conversation, ["S1"])
    assert llama_guard.classify(conversation).category_codes == ("S1",)
    without = llama_guard.classify(conversation, ["S1"])
    assert not without.unsafe and without.model_label == "safe"


def test_response_classification_judges_the_assistant(llama_guard):
    harmful = LLAMA_GUARD_EXAMPLES["harmful_answer"].conversation()
    assert llama_guard.plan(harmful).role == "Agent"
    assert llama_guard.classify(harmful).category_codes == ("S2",)
    assert not llama_guard.classify(LLAMA_GUARD_EXAMPLES["refusal"].conversation()).unsafe


def test_threshold_moves_the_verdict_not_the_score(llama_guard):
    conversation = LLAMA_GUARD_EXAMPLES["benign"].conversation()
    default = llama_guard.classify(conversation)
    strict = llama_guard.classify(conversation, threshold=default.p_unsafe / 2)
    assert not default.unsafe and strict.unsafe
    assert strict.p_unsafe == default.p_unsafe


def test_decision_tokens_come_from_the_tokenizer(llama_guard):
    tokenizer = llama_guard.tokenizer
    assert tokenizer.decode([llama_guard.safe_id]) == "safe"
    assert tokenizer.decode([llama_guard.unsafe_id]) == "unsafe"
    # Every spelling the tokenizer has as one token, with and without a leading space.
    assert [tokenizer.decode([i]) for i in llama_guard.safe_ids] in (["safe"], ["safe", " safe"])
    assert [tokenizer.decode([i]) for i in llama_guard.unsafe_ids] in (
        ["unsafe"], ["unsafe", " unsafe"])


def test_null_attention_chunk_size_is_patched(llama_guard, tiny_dirs):
    import json

    saved = json.loads((tiny_dirs[0] / "config.json").read_text())
    assert saved["text_config"]["attention_chunk_size"] is None  # as the real checkpoint
    assert llama_guard.model.config.text_config.attention_chunk_size == PATCHED_CHUNK_SIZE
    assert llama_guard.context_limit == min(2048, PATCHED_CHUNK_SIZE)


def test_too_long_conversation_names_limit_and_size(llama_guard):
    long_text = "the weather report " * 1500
    with pytest.raises(ContextTooLong, match=r"The prompt is [\d,]+ tokens; .* at most 2,048"):
        llama_guard.classify(Conversation.build([user(long_text)]))


def test_unknown_image_count_mismatch_cannot_happen(llama_guard):
    # Each image becomes one placeholder in its own message; the processor agrees on the count.
    conversation = Conversation.build([user("What is in this picture?", swatch(RED)),
                                       assistant("A red square."),
                                       user("And this one?", Image.new("RGB", (40, 90)))])
    verdict = llama_guard.classify(conversation)
    assert verdict.images == 2 and verdict.prompt_tokens > 0


def test_concurrent_calls_are_safe(llama_guard):
    names = ["violent", "benign", "red_image", "refusal"] * 3
    expected = {n: llama_guard.classify(LLAMA_GUARD_EXAMPLES[n].conversation()).raw_output
                for n in set(names)}
    results, errors = {}, []

    def work(i, name):
        try:
            results[i] = llama_guard.classify(LLAMA_GUARD_EXAMPLES[name].conversation()).raw_output
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [results[i] for i in range(len(names))] == [expected[n] for n in names]


def test_plain_recipe_sees_the_same_prompt(llama_guard):
    # The tiny processor ships a chat template equal to the official one: the announcement's
    # recipe and our renderer must give the model identical input ids.
    several_parts = from_messages([{"role": "user", "content": [
        {"type": "text", "text": "Hello"}, {"type": "image", "image": swatch(RED)},
        {"type": "text", "text": "world"}]}])
    for example in [*LLAMA_GUARD_EXAMPLES.values(), GuardExample((), (), "")]:
        conversation = example.conversation() if example.turns else several_parts
        recipe = llama_guard.processor.apply_chat_template(
            conversation.to_messages(), tokenize=False,
            excluded_category_keys=list(example.excluded))
        assert recipe == render(conversation, example.excluded)


def test_inputs_equal_the_processors_with_each_distinct_image_preprocessed_once(llama_guard):
    import torch

    conversations = [e.conversation() for _, e in EXAMPLES]
    shared = LLAMA_GUARD_EXAMPLES["four_blue_one_red"].conversation()
    conversations += [shared] * 3  # a sweep repeats the same image objects
    prompts = [render(c) for c in conversations]
    images = [image for c in conversations for image in c.images]
    ours = llama_guard.prepare(prompts, images)
    reference = llama_guard.processor(text=prompts, images=images, return_tensors="pt",
                                      padding=True, padding_side="left", add_special_tokens=False)
    assert torch.equal(ours["input_ids"], reference["input_ids"])
    assert torch.equal(ours["attention_mask"], reference["attention_mask"])
    assert torch.equal(ours["pixel_values"], reference["pixel_values"].to(ours["pixel_values"].dtype))
    distinct = llama_guard._encode(prompts, images)
    assert distinct["pixel_values"].shape[0] < reference["pixel_values"].shape[0]
    assert distinct["tile_index"].shape[0] == reference["pixel_values"].shape[0]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("with_images", [False, True], ids=["text", "images"])
def test_special_token_text_in_a_message_stays_text(llama_guard, attack, with_images):
    # Whatever a message says, the prompt holds exactly the template's own special tokens (the
    # ids and the count of a harmless message of the same shape), and the text decodes back.
    images = (swatch(RED), swatch(BLUE)) if with_images else ()

    def shaped(text):
        return Conversation.build([user(BREAK_IN, *images[:1]), assistant(text),
                                   user(text, *images[1:])])

    tokenizer = llama_guard.tokenizer
    attacked, harmless = llama_guard.plan(shaped(attack)), llama_guard.plan(shaped(HARMLESS))
    conversation = shaped(attack)
    ids = llama_guard.prepare([attacked], list(conversation.images))["input_ids"][0].tolist()
    reference = llama_guard.prepare([harmless], list(conversation.images))["input_ids"][0].tolist()
    assert specials_in(ids, tokenizer) == specials_in(reference, tokenizer)
    if not with_images:
        assert tokenizer.decode(ids) == attacked.prompt
    else:  # the images' own tokens aside, the text comes back too
        assert attack in tokenizer.decode(ids)
    # Only this tokenizer's own special tokens count (<|eot_id|> is plain text to Llama 4).
    spells = any(t.content in attack for t in tokenizer.added_tokens_decoder.values())
    if spells and not with_images:
        # The plain recipe, which tokenizes the prompt string, reads them as tokens.
        recipe = tokenizer(attacked.prompt, add_special_tokens=False)["input_ids"]
        assert len(specials_in(recipe, tokenizer)) > len(specials_in(reference, tokenizer))
    assert llama_guard.classify(conversation).special_token_text is spells
    assert not llama_guard.classify(shaped(HARMLESS)).special_token_text


def test_image_placeholder_typed_in_a_message_is_text_not_an_image(llama_guard):
    typed = Conversation.build([user("look at <|image|> this", swatch(RED))])
    verdict = llama_guard.classify(typed)
    assert verdict.images == 1 and verdict.special_token_text
    plain = llama_guard.classify(Conversation.build([user("look at this", swatch(RED))]))
    assert verdict.prompt_tokens > plain.prompt_tokens  # the text's own tokens, one image


def test_custom_categories_cannot_hold_special_tokens(llama_guard):
    from guard import CustomCategory, InvalidCategories

    with pytest.raises(InvalidCategories, match="special token"):
        llama_guard.plan(Conversation.build([user("q")]), (),
                         [CustomCategory("Rivals", "Mentions <|eot|> of rivals.")])


def test_prompt_strings_are_still_accepted_and_trusted(llama_guard):
    # tune and benchmarks pass rendered strings: tokenized as they stand, as before.
    conversation = LLAMA_GUARD_EXAMPLES["red_image"].conversation()
    prompt_plan = llama_guard.plan(conversation)
    by_string = llama_guard.prepare([prompt_plan.prompt], list(conversation.images))
    by_plan = llama_guard.prepare([prompt_plan], list(conversation.images))
    assert torch.equal(by_string["input_ids"], by_plan["input_ids"])


def test_a_safe_answer_stops_at_safe_with_the_same_verdicts(llama_guard, monkeypatch):
    """The decode change of bench_engine.py's stop_at_safe line: fewer steps, same answers."""
    examples = list(LLAMA_GUARD_EXAMPLES.values())
    conversations = [e.conversation() for e in examples]
    excluded = [e.excluded for e in examples]
    steps = []
    generate = llama_guard.model.generate

    def counting(*args, **kwargs):
        out = generate(*args, **kwargs)
        steps.append(len(out.logits))
        return out

    monkeypatch.setattr(llama_guard.model, "generate", counting)
    stopped = llama_guard.classify_batch(conversations, excluded_per_item=excluded)
    monkeypatch.setattr(llama_guard, "stop_at_safe", False)
    full = llama_guard.classify_batch(conversations, excluded_per_item=excluded)
    assert [(v.raw_output, v.p_unsafe) for v in stopped] == [(v.raw_output, v.p_unsafe)
                                                              for v in full]
    assert [v.raw_output.strip() for v in stopped] == [e.answer for e in examples]
    safe = next(e for e in examples if e.answer == "safe").conversation()
    steps.clear()
    llama_guard.classify(safe)
    monkeypatch.setattr(llama_guard, "stop_at_safe", True)
    llama_guard.classify(safe)
    assert steps[1] == steps[0] - 1  # the step that only wrote the end token is gone


def test_capabilities_are_declared_and_described(llama_guard):
    from guard.engines.engine import Capabilities, Engine

    assert isinstance(llama_guard, Engine)
    assert llama_guard.capabilities == Capabilities(images=True, category_scores=True,
                                                    batching=True, adapters=True)
    info = llama_guard.describe()
    assert info.capabilities == llama_guard.capabilities and info.multimodal
