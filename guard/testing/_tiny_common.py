"""Pieces shared by the tiny-model builders: the Llama-style BPE tokenizer, the training loop,
atomic saving."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
