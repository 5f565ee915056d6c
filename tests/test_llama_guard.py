"""End to end on the tiny Llama Guard 4: real processor, real generation, real logits."""

import threading

import pytest
from PIL import Image

from guard import ContextTooLong, Conversation, render, user
from guard.conversation import assistant
from guard.llama_guard import PATCHED_CHUNK_SIZE
from guard.tiny import LLAMA_GUARD_EXAMPLES, RED, swatch

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
    for example in LLAMA_GUARD_EXAMPLES.values():
        conversation = example.conversation()
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


def test_image_placeholder_typed_in_a_message_is_refused(llama_guard):
    from guard import InvalidConversation

    conversation = Conversation.build([user("look at <|image|> this", swatch(RED))])
    with pytest.raises(InvalidConversation, match="reserves for images"):
        llama_guard.classify(conversation)
