"""Builders shared by the labels tests (no tests here)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from PIL import Image

from guard.core.conversation import Conversation, Turn
from guard.core.prompts import CustomCategory
from labels import ExampleInput, LabelInput, ModelOutput

MODEL = "meta-llama/Llama-Guard-4-12B"
TABLES = ("examples", "images", "example_images", "labels", "label_events")


def image(color: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> Image.Image:
    return Image.new("RGB", size, color)


def conversation(text: str = "How do I pick a lock?", images: tuple[Image.Image, ...] = (),
                 reply: str | None = None) -> Conversation:
    turns = [Turn("user", text, images)]
    if reply is not None:
        turns.append(Turn("assistant", reply))
    return Conversation.build(turns)


def example(text: str = "How do I pick a lock?", images: tuple[Image.Image, ...] = (), *,
            unsafe: bool = True, p_unsafe: float = 0.9, categories: tuple[str, ...] = ("S2",),
            family: str = "llama-guard-4", model: str = MODEL, excluded: tuple[str, ...] = (),
            custom: tuple[CustomCategory, ...] = (), reply: str | None = None,
            scores: dict[str, float] | None = None) -> ExampleInput:
    raw = "unsafe\n" + ",".join(categories) if unsafe else "safe"
    output = ModelOutput(model=model, raw_output=raw, unsafe=unsafe, p_unsafe=p_unsafe,
                         threshold=0.5, categories=categories if unsafe else (),
                         model_label="unsafe" if unsafe else "safe", revision="rev1",
                         prompt_guard_model="meta-llama/Llama-Prompt-Guard-2-86M",
                         prompt_guard_scores=scores or {})
    return ExampleInput(conversation(text, images, reply), family, output, excluded, custom)


def label(reviewer: str = "alice", value: str = "unsafe", categories: tuple[str, ...] = ("S2",),
          note: str = "") -> LabelInput:
    return LabelInput(reviewer, value, categories, note)


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
