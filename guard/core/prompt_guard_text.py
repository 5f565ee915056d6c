"""How Prompt Guard reads a text before scoring it: as given, or as LlamaFirewall reads it.

The model card's recipe scores the text as given ("none"). Meta's production scanner,
LlamaFirewall (`PromptGuard._preprocess_text_for_promptguard` in meta-llama/PurpleLlama
`llamafirewall/scanners/promptguard_utils.py`), first collapses whitespace tricks such as
`I g n o r e` ("llamafirewall"). No torch here: the app's options read these names.
"""

from __future__ import annotations

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
