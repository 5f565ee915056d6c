"""The llama.cpp engine on the tiny Llama Guard 3 stand-in's GGUF, against transformers on the
same weights: same answers, same p_unsafe, and a worker crash that stays in its own process."""

import os
import signal
import threading
import time

import pytest
from special_text import ATTACKS, HARMLESS, specials_in

from guard import Conversation, GuardError, ModelLoadError, assistant, user
from guard.core.categories import Family
from guard.core.errors import ContextTooLong
from guard.engines.engine import Capabilities, Engine
from guard.engines.llama_cpp_engine import (
    ImagesNotSupported,
    LlamaCppGuard,
    WorkerCrashed,
    resolve_gguf,
)
from guard.testing.tiny import RED, swatch
from guard.testing.tiny_text import TEXT_EXAMPLES, expected

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                                        "(pip install llama-cpp-python)")

NAMES = list(TEXT_EXAMPLES)
FAMILIES = [Family.LLAMA_GUARD_3, Family.LLAMA_GUARD_3_1B, Family.LLAMA_GUARD_2]


@pytest.fixture(scope="session")
def lcpp(tiny_text):
    with LlamaCppGuard.load(tiny_text.gguf_f32, family="llama-guard-3", n_ctx=2048,
                            n_threads=1) as engine:
        yield engine


def _run_all(engine, family):
    examples = [expected(TEXT_EXAMPLES[n], family) for n in NAMES]
    conversations = [TEXT_EXAMPLES[n].conversation() for n in NAMES]
    return engine.classify_batch(conversations, excluded_per_item=[ex for ex, _ in examples])


@pytest.fixture(scope="module")
def both_engines(tiny_text, lcpp):
    """Every text example in both families through llama.cpp and through transformers."""
    from guard.engines.llama_guard import LlamaGuard

    results = {}
    for family in FAMILIES:
        reference = LlamaGuard.load(tiny_text.hf_dir, family=family, device="cpu")
        if family is Family.LLAMA_GUARD_3:
            ours = _run_all(lcpp, family)
        else:
            with LlamaCppGuard.load(tiny_text.gguf_f32, family=family, n_ctx=2048,
                                    n_threads=1) as engine:
                ours = _run_all(engine, family)
        results[family] = (ours, _run_all(reference, family))
    return results


@pytest.mark.parametrize("family", FAMILIES, ids=[f.value for f in FAMILIES])
@pytest.mark.parametrize("name", NAMES)
def test_same_answers_and_scores_as_transformers(both_engines, family, name):
    ours, reference = (r[NAMES.index(name)] for r in both_engines[family])
    _, answer = expected(TEXT_EXAMPLES[name], family)
    assert ours.raw_output.strip() == answer
    assert reference.raw_output.strip() == answer
    # The stand-in answers as each family's model does: Llama Guard 2 with ' safe' / ' unsafe'
    # (a leading space), the others after a blank line. Both engines read the score from that
    # spelling: a confident score, on the right side.
    assert ours.raw_output.startswith(" " if family is Family.LLAMA_GUARD_2 else "\n\n")
    for verdict in (ours, reference):
        assert (verdict.p_unsafe > 0.9) if answer.startswith("unsafe") else (verdict.p_unsafe < 0.1)
    assert ours.unsafe is answer.startswith("unsafe")
    assert ours.category_codes == tuple(answer.split("\n")[1:2])
    assert ours.p_unsafe == pytest.approx(reference.p_unsafe, abs=1e-3)
    assert ours.prompt_tokens == reference.prompt_tokens
    assert (ours.model, ours.family, ours.images) == (str(ours.model), family.value, 0)
    assert ours.seconds > 0


def test_tokens_are_the_transformers_tokens(lcpp, tiny_text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_text.hf_dir)
    conversation = TEXT_EXAMPLES["harmful_answer"].conversation()
    prompt = lcpp.plan(conversation, ["S2"]).prompt
    ids = lcpp.tokenize(prompt)
    assert ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1  # the prompt's own BOS, no second one
    # Piece by piece, a harmless prompt gets exactly the ids of the whole string.
    assert lcpp.prompt_tokens(lcpp.plan(conversation, ["S2"])) == ids


@pytest.mark.parametrize("family", FAMILIES, ids=[f.value for f in FAMILIES])
@pytest.mark.parametrize("attack", ATTACKS)
def test_special_token_text_in_a_message_stays_text(lcpp, tiny_text, family, attack):
    # Whatever a message says, the prompt llama.cpp is given holds exactly the template's own
    # special tokens (those of a harmless message of the same shape), the very ids transformers
    # gives it, and the text decodes back unchanged.
    from transformers import AutoTokenizer

    from guard.core.prompts import plan
    from guard.engines.llama_guard import LlamaGuard

    tokenizer = AutoTokenizer.from_pretrained(tiny_text.hf_dir)

    def shaped(text):
        return Conversation.build([user(HARMLESS), assistant(text), user(text)])

    attacked = plan(shaped(attack), (), family)
    ids = lcpp.prompt_tokens(attacked)
    reference = lcpp.prompt_tokens(plan(shaped(HARMLESS), (), family))
    assert specials_in(ids, tokenizer) == specials_in(reference, tokenizer)
    assert tokenizer.decode(ids) == attacked.prompt
    on_transformers = LlamaGuard.load(tiny_text.hf_dir, family=family, device="cpu")
    assert on_transformers.prepare([attacked], [])["input_ids"][0].tolist() == ids
    spells = any(t.content in attack for t in tokenizer.added_tokens_decoder.values())
    if spells:  # tokenizing the prompt string, as llama.cpp's own recipe does, reads the tokens
        assert len(specials_in(lcpp.tokenize(attacked.prompt), tokenizer)) > len(
            specials_in(reference, tokenizer))
    if family is Family.LLAMA_GUARD_3:
        assert lcpp.classify(shaped(attack)).special_token_text is spells
        assert not lcpp.classify(shaped(HARMLESS)).special_token_text


def test_quantized_q8_0_gives_the_same_answers(tiny_text):
    with LlamaCppGuard.load(tiny_text.gguf_q8_0, family="llama-guard-3", n_ctx=2048,
                            n_threads=1) as engine:
        verdicts = _run_all(engine, Family.LLAMA_GUARD_3)
        assert "Q8_0" in engine.describe().dtype
    for name, verdict in zip(NAMES, verdicts, strict=True):
        assert verdict.raw_output.strip() == expected(TEXT_EXAMPLES[name], Family.LLAMA_GUARD_3)[1]


def test_is_an_engine_and_describes_itself(lcpp, tiny_text):
    assert isinstance(lcpp, Engine)
    info = lcpp.describe()
    assert (info.engine, info.family, info.multimodal, info.context_limit) == (
        "llama-cpp", "llama-guard-3", False, 2048)
    assert info.name == str(tiny_text.gguf_f32)
    # Text only, one prompt after another, no logits for per-category scores, no adapters.
    assert info.capabilities == lcpp.capabilities == Capabilities()


def test_images_are_refused_with_a_clear_error(lcpp):
    conversation = Conversation.build([user("What is in this picture?", swatch(RED))])
    with pytest.raises(ImagesNotSupported, match="text only .* 1 image"):
        lcpp.classify(conversation)
    assert issubclass(ImagesNotSupported, GuardError)


def test_too_long_prompt_names_the_sizes(lcpp):
    with pytest.raises(ContextTooLong, match=r"The prompt is [\d,]+ tokens; .* holds 2,048"):
        lcpp.classify(Conversation.build([user("the weather report " * 1500)]))
    assert not lcpp.classify(TEXT_EXAMPLES["benign"].conversation()).unsafe


def _killed(engine, sig=signal.SIGKILL):
    os.kill(engine.pid, sig)


def test_a_killed_worker_is_a_clear_error_then_restarts(lcpp):
    conversation = TEXT_EXAMPLES["violent"].conversation()
    before = lcpp.classify(conversation)
    old_pid = lcpp.pid
    _killed(lcpp)
    with pytest.raises(WorkerCrashed, match=r"worker process died \(killed by SIGKILL\).*restarts"):
        lcpp.classify(conversation)
    after = lcpp.classify(conversation)  # a fresh worker
    assert lcpp.pid != old_pid
    assert after.raw_output == before.raw_output and after.p_unsafe == before.p_unsafe


def test_a_crash_during_a_request_is_a_clear_error(lcpp):
    os.kill(lcpp.pid, signal.SIGSTOP)  # freeze it so the request is surely in flight
    errors = []

    def call():
        try:
            lcpp.classify(TEXT_EXAMPLES["benign"].conversation())
        except GuardError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 120  # until the call holds the engine (its request is going)
    while not lcpp._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(lcpp.pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [WorkerCrashed]
    assert "this request was not judged" in str(errors[0])
    assert not lcpp.classify(TEXT_EXAMPLES["benign"].conversation()).unsafe


def test_a_stuck_worker_times_out_and_is_replaced(tiny_text):
    with LlamaCppGuard.load(tiny_text.gguf_f32, n_ctx=2048, n_threads=1,
                            request_timeout=0.5) as engine:
        assert engine.family is Family.LLAMA_GUARD_3  # guessed from "llama-guard-3-tiny"
        assert engine.info["safe_ids"] == [engine.info["safe_id"], engine.info["safe_ids"][1]]
        os.kill(engine.pid, signal.SIGSTOP)
        with pytest.raises(WorkerCrashed, match="did not answer within 0.5 s"):
            engine.classify(TEXT_EXAMPLES["benign"].conversation())
        engine.request_timeout = 600  # the fresh worker is not stuck: give a loaded machine time
        assert engine.classify(TEXT_EXAMPLES["violent"].conversation()).unsafe


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="No GGUF file at .*REPO:FILE"):
        LlamaCppGuard.load(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file" * 10)
    with pytest.raises(ModelLoadError, match="could not load"):
        LlamaCppGuard.load(junk, n_threads=1)


def test_local_paths_resolve_without_the_hub(tiny_text):
    assert resolve_gguf(tiny_text.gguf_f32) == tiny_text.gguf_f32


def test_repo_and_glob_resolve_through_the_hub_client(monkeypatch, tmp_path):
    # The Hub is not ours and not reachable here: its two client calls are replaced.
    import huggingface_hub

    files = ["README.md", "Llama-Guard-3-1B.Q4_K_M.gguf", "Llama-Guard-3-1B.Q8_0.gguf"]
    downloads = []
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo_id, revision=None: files)

    def download(repo_id, filename, revision=None, token=None):
        downloads.append((repo_id, filename, revision, token))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    path = resolve_gguf("QuantFactory/Llama-Guard-3-1B-GGUF:*Q4_K_M.gguf", revision="main")
    assert path == tmp_path / "Llama-Guard-3-1B.Q4_K_M.gguf"
    assert downloads == [("QuantFactory/Llama-Guard-3-1B-GGUF", "Llama-Guard-3-1B.Q4_K_M.gguf",
                          "main", None)]  # token None: huggingface_hub reads HF_TOKEN itself
    with pytest.raises(ModelLoadError, match=r"\*.gguf matches 2 files .*Q4_K_M.gguf, .*Q8_0"):
        resolve_gguf("QuantFactory/Llama-Guard-3-1B-GGUF:*.gguf")
