"""The tiny models this repository ships are the ones their recipes make.

A fresh clone copies guard/testing/prebuilt instead of training (seconds instead of minutes), so
the shipped files must stay what the recipes in guard/testing make: same content key (nothing
the models are made from changed since they were shipped), and a rebuild here gives the same
files. The Llama Guard builds are deterministic on one machine (the Llama Guard 4 weights were
byte-equal on two machines of this kind); another CPU may round differently, so where weights
are not byte-equal the rebuilt model must give every known answer the shipped one gives, with
p_unsafe within 0.05. The Prompt Guard tokenizer is not reproducible even on one machine
(`tokenizers`' WordPiece trainer numbers equally frequent characters in hash order), so its
token ids and weights differ between builds: the rebuilt Prompt Guard must label every known
example as the shipped one does and as it is labelled.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from guard.testing._tiny_common import MARKER, SHIPPED_DIR, built_key
from guard.testing.tiny import (
    LLAMA_GUARD_DIR,
    LLAMA_GUARD_EXAMPLES,
    PROMPT_GUARD_DIR,
    PROMPT_GUARD_EXAMPLES,
    llama_guard_key,
    prompt_guard_key,
)
from guard.testing.tiny_text import TEXT_DIR, text_model_key

pytestmark = pytest.mark.models
WEIGHTS = {"model.safetensors", "model-f32.gguf", "model-q8_0.gguf"}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def test_the_shipped_models_are_of_the_current_recipes():
    keys = {LLAMA_GUARD_DIR: llama_guard_key(), PROMPT_GUARD_DIR: prompt_guard_key(),
            TEXT_DIR: text_model_key()}
    for name, key in keys.items():
        assert built_key(SHIPPED_DIR / name) == key, (
            f"guard/testing/prebuilt/{name} was made from another recipe: run "
            f"`python -m guard.testing.ship` and commit the result")


def test_a_fresh_cache_copies_the_shipped_models_without_training(tmp_path, monkeypatch):
    from guard.testing import _tiny_common
    from guard.testing.tiny import build_tiny_models
    from guard.testing.tiny_text import build_tiny_text_model

    def no_training(*_args, **_kwargs):
        raise AssertionError("trained although a shipped build of the same recipe exists")

    monkeypatch.setattr("guard.testing.tiny._build_llama_guard", no_training)
    monkeypatch.setattr("guard.testing.tiny._build_prompt_guard", no_training)
    monkeypatch.setattr("guard.testing.tiny_text._build", no_training)
    lg_dir, pg_dir = build_tiny_models(tmp_path)
    text_dir = build_tiny_text_model(tmp_path).hf_dir
    for folder in (lg_dir, pg_dir, text_dir):
        assert files(folder) == files(_tiny_common.SHIPPED_DIR / folder.name)
        assert built_key(folder) == built_key(_tiny_common.SHIPPED_DIR / folder.name)

    # A build of the same key trained here (other threads round differently) is replaced by
    # the shipped one, so every machine runs the same weights.
    (lg_dir / "model.safetensors").write_bytes(b"trained here")
    (lg_dir / MARKER).write_text(json.dumps({"key": llama_guard_key(), "source": "built"}))
    build_tiny_models(tmp_path)
    assert files(lg_dir) == files(_tiny_common.SHIPPED_DIR / LLAMA_GUARD_DIR)


def _rebuilt_like_shipped(folder) -> None:
    ours, shipped = files(folder), files(SHIPPED_DIR / folder.name)
    assert set(ours) == set(shipped), folder.name
    other = {name for name in ours if ours[name] != shipped[name]}
    # Configs and templates carry no arithmetic: always byte-equal; so are the BPE tokenizers.
    may_differ = WEIGHTS | ({"tokenizer.json"} if folder.name == PROMPT_GUARD_DIR else set())
    assert {name.rsplit("/", 1)[-1] for name in other} <= may_differ, (folder.name, other)
    if other:
        print(f"\n{folder.name}: {sorted(other)} differ from the shipped bytes on this machine; "
              "comparing answers instead")


# Training takes about a minute per model on two idle cores, many more on a loaded machine.
@pytest.mark.timeout(3600)
def test_the_recipe_rebuilds_the_shipped_llama_guard_4_and_prompt_guard(tmp_path):
    from guard.testing.tiny import build_tiny_models

    lg_dir, pg_dir = build_tiny_models(tmp_path, use_shipped=False)
    for folder in (lg_dir, pg_dir):
        _rebuilt_like_shipped(folder)
    _same_llama_guard_answers(lg_dir, SHIPPED_DIR / LLAMA_GUARD_DIR)
    _same_prompt_guard_scores(pg_dir, SHIPPED_DIR / PROMPT_GUARD_DIR)


@pytest.mark.timeout(3600)
def test_the_recipe_rebuilds_the_shipped_llama_guard_3_stand_in(tmp_path):
    from guard.engines.llama_guard import LlamaGuard
    from guard.testing.tiny_text import TEXT_EXAMPLES, build_tiny_text_model, expected

    folder = build_tiny_text_model(tmp_path, use_shipped=False).hf_dir
    _rebuilt_like_shipped(folder)
    examples = list(TEXT_EXAMPLES.values())
    answers = []
    for model in (folder, SHIPPED_DIR / TEXT_DIR):
        guard = LlamaGuard.load(model, device="cpu", family="llama-guard-3")
        answers.append(guard.classify_batch(
            [e.conversation() for e in examples],
            excluded_per_item=[expected(e, "llama-guard-3")[0] for e in examples]))
    for example, ours, theirs in zip(examples, *answers, strict=True):
        assert ours.raw_output.strip() == theirs.raw_output.strip()
        assert ours.raw_output.strip() == expected(example, "llama-guard-3")[1]
        assert abs(ours.p_unsafe - theirs.p_unsafe) <= 0.05


def _same_llama_guard_answers(rebuilt, shipped) -> None:
    from guard.engines.llama_guard import LlamaGuard

    examples = list(LLAMA_GUARD_EXAMPLES.values())
    verdicts = []
    for folder in (rebuilt, shipped):
        guard = LlamaGuard.load(folder, device="cpu")
        verdicts.append(guard.classify_batch([e.conversation() for e in examples],
                                             excluded_per_item=[e.excluded for e in examples]))
    for example, ours, theirs in zip(examples, *verdicts, strict=True):
        assert ours.raw_output.strip() == theirs.raw_output.strip() == example.answer
        assert abs(ours.p_unsafe - theirs.p_unsafe) <= 0.05


def _same_prompt_guard_scores(rebuilt, shipped) -> None:
    from guard.engines.prompt_guard import PromptGuard

    texts = [text for text, _ in PROMPT_GUARD_EXAMPLES.values()]
    scores = [[s.p_malicious for s in PromptGuard.load(folder, device="cpu").score_many(texts)]
              for folder in (rebuilt, shipped)]
    for (text, label), ours, theirs in zip(PROMPT_GUARD_EXAMPLES.values(), *scores, strict=True):
        assert (ours >= 0.5) == (theirs >= 0.5) == bool(label), (text, ours, theirs)
