"""Prompt Guard without torch: how it reads a text, and the scores it gives, as plain data.

How a text is read: the model card's recipe scores it as given ("none"). Meta's production
scanner, LlamaFirewall (`PromptGuard._preprocess_text_for_promptguard` in meta-llama/PurpleLlama
`llamafirewall/scanners/promptguard_utils.py`), first collapses whitespace tricks such as
`I g n o r e` ("llamafirewall"). The app's options read these names.

What it says: `TextScore` per text, `MessageScore` per message of a conversation, and
`PromptGuardInfo` about the loaded model (`guard.engines.prompt_guard` makes them), each with the
JSON of `python -m guard classify` and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from guard.core.errors import GuardError

# How a text is read before scoring: as given (the model card), or as LlamaFirewall reads it.
PREPROCESSING = ("none", "llamafirewall")


class UnknownPreprocessing(GuardError):
    """A Prompt Guard preprocessing name that is not one of PREPROCESSING."""


def check_preprocessing(name: str | None) -> str:
    """The preprocessing `name` (None: "none"), or UnknownPreprocessing."""
    name = (name or "none").strip().lower()
    if name not in PREPROCESSING:
        raise UnknownPreprocessing(
            f"Unknown Prompt Guard preprocessing {name!r}. Use one of: {', '.join(PREPROCESSING)}.")
    return name


def collapse_spacing(text: str, tokenizer: Any) -> str:
    """LlamaFirewall's `_preprocess_text_for_promptguard`: drop every whitespace character,
    tokenize what is left, and put one space back before each token that followed whitespace
    in the original. "I g n o r e all" becomes "Ignore all" when "Ignore" is one token.

    Token starts come from the tokenizer's offsets rather than from searching for each token's
    text, so characters the tokenizer normalises are kept as written and nothing can fail.
    """
    kept = [i for i, ch in enumerate(text) if not ch.isspace()]
    cleaned = "".join(text[i] for i in kept)
    if not cleaned:
        return ""
    offsets = tokenizer(cleaned, add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    starts = {start for start, end in offsets if end > start}
    out = []
    for position, ch in enumerate(cleaned):
        original = kept[position]
        if position in starts and original > 0 and text[original - 1].isspace():
            out.append(" ")
        out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class TextScore:
    """The malicious probability of one text: the maximum over its windows."""

    p_malicious: float
    window: int  # index of the window that scored highest
    windows: int
    window_scores: tuple[float, ...]
    tokens: int
    seconds: float
    preprocessing: str = "none"
    changed: bool = False  # the preprocessing changed the text that was scored

    def to_json(self) -> dict[str, Any]:
        return {"p_malicious": round(self.p_malicious, 6), "window": self.window,
                "windows": self.windows, "window_scores": [round(s, 6) for s in self.window_scores],
                "tokens": self.tokens, "seconds": round(self.seconds, 4),
                "preprocessing": self.preprocessing, "preprocessing_changed_text": self.changed}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TextScore:
        """The score `to_json` wrote (its numbers rounded as written)."""
        return cls(float(data["p_malicious"]), int(data["window"]), int(data["windows"]),
                   tuple(float(s) for s in data["window_scores"]), int(data["tokens"]),
                   float(data["seconds"]), data["preprocessing"],
                   bool(data["preprocessing_changed_text"]))


@dataclass(frozen=True)
class MessageScore:
    index: int  # position of the message in the conversation, from 0
    role: str
    score: TextScore

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "role": self.role, **self.score.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MessageScore:
        return cls(int(data["index"]), data["role"], TextScore.from_json(data))


@dataclass(frozen=True)
class PromptGuardInfo:
    """What a loaded Prompt Guard says about itself."""

    name: str
    device: str
    window: int  # tokens per window, [CLS] and [SEP] included
    revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromptGuardInfo:
        return cls(data["name"], data["device"], int(data["window"]), data.get("revision"))
