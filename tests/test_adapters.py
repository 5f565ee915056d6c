"""guard.adapters: chat messages with data URLs, the GuardBench callback, the firewall scanners."""

from __future__ import annotations

import base64
import enum
import io
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
from helpers import REPO

from guard.adapters import firewall
from guard.adapters.firewall import LlamaGuardScanner, PromptGuardScanner, ScanDecision
from guard.adapters.guardbench import moderate
from guard.adapters.messages import chat_conversation, data_url_bytes, input_conversations
from guard.core.conversation import from_messages
from guard.core.errors import InvalidConversation, InvalidImage
from guard.testing.tiny import (
    BENIGN,
    BLUE,
    BREAK_IN,
    BREAK_IN_ANSWER,
    JAILBREAK,
    PICTURE,
    RED,
    REFUSAL,
    VIOLENT,
    swatch,
)


def data_url(colour: tuple[int, int, int], size: int = 32) -> str:
    buffer = io.BytesIO()
    swatch(colour, size).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


# ---- messages: OpenAI-style parts as a Conversation ----


def test_image_url_parts_become_the_message_images():
    conversation = chat_conversation([{"role": "user", "content": [
        {"type": "text", "text": PICTURE}, image_part(data_url(RED, 40)),
        {"type": "image", "url": data_url(BLUE, 20)}]}])
    (turn,) = conversation.turns
    assert (turn.role, turn.text, [i.size for i in turn.images]) == (
        "user", PICTURE, [(40, 40), (20, 20)])
    assert turn.images[0].getpixel((0, 0)) == RED


@pytest.mark.parametrize(("url", "message"), [
    ("https://example.com/cat.png", "web address; Guard Lab does not fetch"),
    ("cat.png", "is not a data URL"),
    ("data:text/plain;base64,aGVsbG8=", "of type 'text/plain', not an image"),
    ("data:image/png,rawbytes", "is not base64"),
    ("data:image/png;base64", "has no ','"),
    ("data:image/png;base64,abc", "base64 is damaged"),
    (None, "the image URL is missing"),
])
def test_a_bad_data_url_says_what_to_send(url, message):
    with pytest.raises(InvalidImage, match=message):
        data_url_bytes(url, label="Image 1")


def test_data_url_bytes_that_are_not_an_image_are_refused_when_decoded():
    url = "data:image/png;base64," + base64.b64encode(b"just some text").decode()
    with pytest.raises(InvalidImage, match="not an image Guard Lab can read"):
        chat_conversation([{"role": "user", "content": [{"type": "text", "text": PICTURE},
                                                        image_part(url)]}])


def test_images_are_counted_before_any_is_decoded():
    parts = [{"type": "text", "text": PICTURE}] + [image_part("data:image/png;base64,@@")] * 6
    with pytest.raises(InvalidConversation, match="6 images, more than the 5"):
        chat_conversation([{"role": "user", "content": parts}])


def test_an_image_part_that_names_a_file_is_refused():
    with pytest.raises(InvalidConversation, match="carry the image itself"):
        chat_conversation([{"role": "user", "content": [
            {"type": "text", "text": PICTURE}, {"type": "image", "path": "/etc/cat.png"}]}])


def test_input_shapes():
    assert [c.turns[0].text for c in input_conversations(VIOLENT)] == [VIOLENT]
    assert [c.turns[0].text for c in input_conversations([VIOLENT, BENIGN])] == [VIOLENT, BENIGN]
    (one,) = input_conversations([{"type": "text", "text": PICTURE}, image_part(data_url(RED))])
    assert (one.turns[0].text, len(one.images)) == (PICTURE, 1)


@pytest.mark.parametrize(("value", "message"), [
    ("", "the text is empty"),
    ([], "must be a string, a list of strings"),
    ([VIOLENT, {"type": "text", "text": "x"}], "mixes strings and parts"),
    ([BENIGN, "  "], r"input\[1\]: .*the text is empty"),
    ([BENIGN] * 3, "holds 3 texts; at most 2"),
])
def test_bad_input_says_what_to_fix(value, message):
    with pytest.raises(InvalidConversation, match=message):
        input_conversations(value, max_inputs=2)


# ---- GuardBench ----

GUARDBENCH_BATCH = [  # GuardBench's shape: role and string content, user first
    [{"role": "user", "content": VIOLENT}],
    [{"role": "user", "content": BENIGN}],
    [{"role": "user", "content": BREAK_IN}, {"role": "assistant", "content": BREAK_IN_ANSWER}],
    [{"role": "user", "content": BREAK_IN}, {"role": "assistant", "content": REFUSAL}],
]


def test_guardbench_moderate_scores_the_last_message_of_each_conversation(llama_guard):
    scores = moderate(conversations=GUARDBENCH_BATCH, engine=llama_guard)
    assert [s > 0.5 for s in scores] == [True, False, True, False]
    assert all(isinstance(s, float) for s in scores)
    one_by_one = [llama_guard.classify(from_messages(c)).p_unsafe for c in GUARDBENCH_BATCH]
    assert scores == pytest.approx(one_by_one, abs=1e-4)


def test_guardbench_moderate_passes_exclusions_and_refuses_a_bad_conversation(llama_guard):
    (score,) = moderate([GUARDBENCH_BATCH[0]], llama_guard, excluded=["S1"])
    assert score < 0.5
    assert moderate([], llama_guard) == []
    with pytest.raises(InvalidConversation, match="Conversation 1 of the batch: Message 1 must"):
        moderate([GUARDBENCH_BATCH[0], [{"role": "assistant", "content": "hi"}]], llama_guard)


def test_guardbench_benchmark_runs_the_adapter(llama_guard, tmp_path, monkeypatch):
    """GuardBench itself, on a local custom dataset (it downloads nothing for those)."""
    guardbench = pytest.importorskip("guardbench")
    monkeypatch.setenv("GUARDBENCH_DEV_PATH", str(tmp_path / "gb"))
    rows = [{"id": str(i), "label": label, "conversation": c}
            for i, (c, label) in enumerate(zip(GUARDBENCH_BATCH, [True, False, True, False],
                                               strict=True))]
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    guardbench.CustomDataset("guard_lab_tiny").load_data(data)
    guardbench.benchmark(moderate=moderate, engine=llama_guard, model_name="tiny",
                         out_dir=str(tmp_path / "results"), datasets=["guard_lab_tiny"],
                         batch_size=3)
    predictions = json.loads((tmp_path / "results" / "guard_lab_tiny" / "tiny.json").read_text())
    assert {k: v > 0.5 for k, v in predictions.items()} == {"0": True, "1": False, "2": True,
                                                            "3": False}


# ---- firewall scanners ----


def test_llama_guard_scanner_blocks_at_one_half(llama_guard):
    scanner = LlamaGuardScanner(llama_guard)
    score, decision, reason = scanner.scan(VIOLENT)
    assert (score > 0.5, decision) == (True, ScanDecision.BLOCK)
    assert reason.startswith("Llama Guard judged the user's message unsafe") and "S1" in reason
    assert scanner.scan({"role": "user", "content": BENIGN}).decision is ScanDecision.ALLOW


def test_llama_guard_scanner_judges_the_last_message_of_a_trace(llama_guard):
    scanner = LlamaGuardScanner(llama_guard)
    trace = [{"role": "system", "content": "You are a helpful agent."},
             {"role": "user", "content": BREAK_IN}]
    result = scanner.scan({"role": "assistant", "content": BREAK_IN_ANSWER}, trace)
    assert result.decision is ScanDecision.BLOCK and "agent's message" in result.reason
    assert scanner.scan([*trace, {"role": "assistant", "content": REFUSAL}]).decision is \
        ScanDecision.ALLOW


def test_a_review_threshold_asks_for_a_person(llama_guard):
    scanner = LlamaGuardScanner(llama_guard, block_threshold=0.999999, review_threshold=0.5)
    assert scanner.scan(VIOLENT).decision is ScanDecision.HUMAN_IN_THE_LOOP_REQUIRED
    assert LlamaGuardScanner(llama_guard, excluded=["S1"]).scan(VIOLENT).decision is \
        ScanDecision.ALLOW


class Role(enum.Enum):  # LlamaFirewall's message types, which are not installed here
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    SYSTEM = "system"


@dataclass
class Message:
    role: Role
    content: str
    tool_calls: list | None = None


def test_a_trace_folds_into_alternating_turns():
    trace = [Message(Role.SYSTEM, "Be helpful."), Message(Role.USER, "Find the report."),
             Message(Role.ASSISTANT, "", [{"name": "search", "arguments": {"q": "report"}}]),
             Message(Role.TOOL, "Report: sales rose."), {"role": "user", "content": "Thanks!"},
             {"role": "assistant", "content": None}, "Summarise it."]
    assert firewall.fold_trace(trace) == [
        {"role": "user", "content": [{"type": "text", "text": "Find the report."}]},
        {"role": "assistant", "content": [
            {"type": "text",
             "text": '[{"name": "search", "arguments": {"q": "report"}}]'}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Report: sales rose.\n\nThanks!\n\nSummarise it."}]},
    ]


@pytest.mark.parametrize(("trace", "message"), [
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
     "the one to judge, is empty"),
    ([{"role": "critic", "content": "hi"}], "has role 'critic'"),
])
def test_a_trace_that_cannot_be_judged_is_refused(trace, message):
    with pytest.raises(InvalidConversation, match=message):
        firewall.fold_trace(trace)


def test_prompt_guard_scanner_blocks_at_nine_tenths(prompt_guard):
    scanner = PromptGuardScanner(prompt_guard)
    score, decision, reason = scanner.scan(JAILBREAK)
    assert (score >= 0.9, decision) == (True, ScanDecision.BLOCK)
    assert reason.startswith("Likely prompt injection or jailbreak")
    benign = scanner.scan([{"role": "user", "content": VIOLENT},
                           Message(Role.TOOL, "The weather is mild today.")])
    assert benign.decision is ScanDecision.ALLOW and benign.score < 0.5


def test_the_thresholds_are_the_projects():
    from guard.core.verdict import DEFAULT_THRESHOLD
    from guard.engines.prompt_guard import FIREWALL_THRESHOLD

    assert (firewall.PROMPT_GUARD_THRESHOLD, LlamaGuardScanner(None).block_threshold) == (
        FIREWALL_THRESHOLD, DEFAULT_THRESHOLD) == (0.9, 0.5)


def test_the_adapters_import_neither_torch_nor_gradio():
    code = ("import sys, guard.adapters.firewall, guard.adapters.guardbench, "
            "guard.adapters.messages; print(sorted({'torch', 'gradio'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
