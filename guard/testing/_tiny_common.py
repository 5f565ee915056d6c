"""Pieces shared by the tiny-model builders: the Llama-style BPE tokenizer, the training loop,
atomic saving."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The builds this repository ships (guard/testing/prebuilt/<folder>), made by the recipes here on
# the machine of the commit that shipped them. `tests/test_tiny_shipped.py` rebuilds each one and
# compares: byte-equal where this machine's build is deterministic like that one's, else the
# same known answers.
SHIPPED_DIR = Path(__file__).resolve().parent / "prebuilt"
MARKER = "guard_lab_tiny.json"
log = logging.getLogger("guard.testing")

# Llama 3's and Llama 4's pre-tokenizer pattern: "\n\n" stays one token, as in the real models
# (llama.cpp's "llama-bpe" splits text the same way).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_llama_tokenizer(corpus: list[str], special_tokens: list[str], *, bos: str, eos: str,
                          pad: str, vocab_size: int = 1024) -> Any:
    """A byte-level BPE tokenizer trained on `corpus`, with the model family's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token=pad, padding_side="left", model_max_length=2048)


def fit(model: Any, batch: dict[str, Any], *, lr: float, max_steps: int, check_every: int) -> int:
    """Train `model` on one fixed batch (AdamW without weight decay, gradients clipped at 1)
    until its loss is under 0.01 at a check every `check_every` steps, or for `max_steps`.
    Returns the steps taken; the model is left in eval mode."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(max_steps):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % check_every == check_every - 1 and loss.item() < 0.01:
            break
    model.eval()
    return step + 1


def save_atomically(out_dir: Path, *parts: Any) -> None:
    """`save_pretrained` every part into a staging folder, then move it into place whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "model"
        for part in parts:
            part.save_pretrained(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        shutil.move(str(staging), out_dir)


def content_key(*parts: Any) -> str:
    """A digest of everything a build is made from (its recipe version and training data), so
    a cached build is reused only when nothing it was made from changed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def built_key(folder: Path) -> str | None:
    """The content key a build folder was made from (its marker), or None when it has none."""
    return _marker(folder).get("key")


def _marker(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def provide(folder: Path, key: str, build: Callable[[Path], None], *, what: str,
            use_shipped: bool = True) -> str:
    """Make `folder` hold the build of `key`: kept when it has it already, else copied from the
    build this repository ships when that one has the same key (milliseconds), else built here
    by training (about a minute on two cores). Returns which: "cached", "shipped" or "built".

    The caller holds the folder's lock; the marker is written last, so an interrupted copy or
    build is redone.
    """
    shipped = SHIPPED_DIR / folder.name
    ship = use_shipped and built_key(shipped) == key
    cached = _marker(folder)
    # A build trained here may differ from the shipped one in its last bits (other threads,
    # another CPU): where a shipped build of this key exists, only a copy of it counts.
    if cached.get("key") == key and (cached.get("source") == "shipped" or not ship):
        return "cached"
    if ship:
        log.info("%s: copying the prebuilt model shipped in guard/testing/prebuilt", what)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            staging = Path(tmp) / "model"
            shutil.copytree(shipped, staging, ignore=shutil.ignore_patterns(MARKER))
            if folder.exists():
                shutil.rmtree(folder)
            shutil.move(str(staging), folder)
        how = "shipped"
    else:
        log.info("%s: training it on this machine (about a minute on two cores; the shipped "
                 "build was made from another recipe)" if use_shipped and shipped.is_dir() else
                 "%s: training it on this machine (about a minute on two cores)", what)
        build(folder)
        how = "built"
    (folder / MARKER).write_text(json.dumps({"key": key, "source": how}))
    return how
