"""Ready-made conversations, built from the tiny models' known inputs.

With the tiny test models each one gives the answer it was trained for; with the real models
they are ordinary probes. Images are plain colour swatches written once to a folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guard.testing import tiny

SWATCHES = {"red": tiny.RED, "blue": tiny.BLUE}


@dataclass(frozen=True)
class Example:
    name: str
    turns: tuple[tuple[str, str, tuple[str, ...]], ...]  # (role, text, swatch names)
    expect: str  # what the tiny models say, shown as a hint


EXAMPLES: tuple[Example, ...] = (
    Example("Benign question", (("user", tiny.BENIGN, ()),), "safe; Prompt Guard benign"),
    Example("Harmful request", (("user", tiny.VIOLENT, ()),), "unsafe S1; Prompt Guard benign"),
    Example("Harmful assistant answer",
            (("user", tiny.BREAK_IN, ()), ("assistant", tiny.BREAK_IN_ANSWER, ())),
            "the answer is unsafe S2"),
    Example("Jailbreak attempt", (("user", tiny.JAILBREAK, ()),),
            "Llama Guard safe, Prompt Guard malicious"),
    Example("Conversation with an image",
            (("user", tiny.BENIGN, ()), ("assistant", "Mix flour, water and starter.", ()),
             ("user", tiny.PICTURE, ("red",))),
            "the red test image stands for a violent picture: unsafe S1"),
    Example("Harmless image", (("user", tiny.PICTURE, ("blue",)),), "safe"),
)

EXAMPLE_NAMES = tuple(e.name for e in EXAMPLES)


def write_swatches(folder: str | Path) -> dict[str, str]:
    """Write the test pictures as PNG files; returns {colour name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, colour in SWATCHES.items():
        path = folder / f"{name}.png"
        if not path.is_file():
            tiny.swatch(colour).save(path)
        paths[name] = str(path)
    return paths


def example_turns(name: str, swatches: dict[str, str]) -> list[dict]:
    """The editor state for example `name`."""
    for example in EXAMPLES:
        if example.name == name:
            return [{"role": role, "text": text, "images": [swatches[c] for c in colours]}
                    for role, text, colours in example.turns]
    raise KeyError(name)
