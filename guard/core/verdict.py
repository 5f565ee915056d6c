"""Verdicts and the pure functions that make them: parsing the answer, scoring the decision."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from guard.core.categories import Category

DEFAULT_THRESHOLD = 0.5
_CODE = re.compile(r"^[A-Za-z]\d+$")
# The decision words and the spellings a model may give them as its first answer token: after
# a blank line 'safe'; after a prompt that ends in a space, or when it skips the blank line,
# ' safe'. Engines score every spelling their tokenizer has as one token.
SAFE_SPELLINGS = ("safe", " safe")
UNSAFE_SPELLINGS = ("unsafe", " unsafe")


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(v))): the logit of a word whose spellings have logits `values`."""
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


@dataclass(frozen=True)
class ParsedAnswer:
    """What the generated text says, before any threshold is applied."""

    label: str  # "safe", "unsafe" or "" when the text is neither
    codes: tuple[str, ...] = ()


def parse_answer(text: str) -> ParsedAnswer:
    """Read 'safe' / 'unsafe\\nS1,S3' tolerantly: stray whitespace, no code line, odd separators."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ParsedAnswer("")
    head = lines[0].lower()
    if head.startswith("unsafe"):
        rest = " ".join([lines[0][len("unsafe"):]] + lines[1:])
        codes = []
        for token in re.split(r"[\s,;]+", rest):
            token = token.strip().strip(".").upper()
            if token and _CODE.match(token) and token not in codes:
                codes.append(token)
        return ParsedAnswer("unsafe", tuple(codes))
    if head.startswith("safe"):
        return ParsedAnswer("safe")
    return ParsedAnswer("")


def p_unsafe_from_logits(safe_logit: float, unsafe_logit: float) -> float:
    """Softmax over the two decision logits: the model cards' classifier score."""
    top = max(safe_logit, unsafe_logit)
    e_safe, e_unsafe = math.exp(safe_logit - top), math.exp(unsafe_logit - top)
    return e_unsafe / (e_safe + e_unsafe)


@dataclass(frozen=True)
class CategoryHit:
    code: str
    name: str


@dataclass(frozen=True)
class Verdict:
    """The result of one Llama Guard classification."""

    unsafe: bool
    p_unsafe: float
    threshold: float
    categories: tuple[CategoryHit, ...]
    raw_output: str
    model_label: str  # what the generated text said: "safe", "unsafe" or ""
    unknown_codes: tuple[str, ...] = ()
    excluded_codes: tuple[str, ...] = ()
    prompt_tokens: int = 0
    images: int = 0
    seconds: float = 0.0
    model: str = ""
    family: str = ""
    # A message held the text of one of the model's special tokens (such as <|eot|>); it was
    # judged as plain text, never as the token.
    special_token_text: bool = False
    # A message held text that imitates the prompt's template (`<END CONVERSATION>`, its
    # instructions, a line starting "Agent:" or "S1:"; guard.core.markers): the model may have
    # read it as the prompt's own structure, unless the server neutralised it.
    prompt_marker_text: bool = False

    @property
    def verdict(self) -> str:
        return "unsafe" if self.unsafe else "safe"

    @property
    def category_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        data["categories"] = [asdict(c) for c in self.categories]
        data["p_unsafe"] = round(self.p_unsafe, 6)
        data["seconds"] = round(self.seconds, 4)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        """The verdict `to_json` wrote (other keys in `data` are ignored); its numbers are
        the rounded ones, so `from_json(d).to_json()` gives `d`'s verdict keys back."""
        return cls(
            unsafe=bool(data["unsafe"]), p_unsafe=float(data["p_unsafe"]),
            threshold=float(data["threshold"]),
            categories=tuple(CategoryHit(c["code"], c["name"]) for c in data["categories"]),
            raw_output=data["raw_output"], model_label=data["model_label"],
            unknown_codes=tuple(data["unknown_codes"]), excluded_codes=tuple(data["excluded_codes"]),
            prompt_tokens=int(data["prompt_tokens"]), images=int(data["images"]),
            seconds=float(data["seconds"]), model=data["model"], family=data["family"],
            special_token_text=bool(data["special_token_text"]),
            prompt_marker_text=bool(data.get("prompt_marker_text", False)))


def make_verdict(raw_output: str, p_unsafe: float, enabled: Sequence[Category],
                 all_categories: Sequence[Category], *, threshold: float = DEFAULT_THRESHOLD,
                 **details: Any) -> Verdict:
    """Combine the generated text and the score into a Verdict.

    Codes the model names but that were excluded from the prompt, or that no table knows, are
    reported apart instead of being silently dropped or crashing the caller.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    answer = parse_answer(raw_output)
    enabled_by_code = {c.code: c for c in enabled}
    known = {c.code for c in all_categories} | set(enabled_by_code)
    hits, unknown, excluded = [], [], []
    for code in answer.codes:
        if code in enabled_by_code:
            hits.append(CategoryHit(code, enabled_by_code[code].card_name))
        elif code in known:
            excluded.append(code)
        else:
            unknown.append(code)
    return Verdict(
        unsafe=p_unsafe >= threshold, p_unsafe=p_unsafe, threshold=threshold,
        categories=tuple(hits), raw_output=raw_output, model_label=answer.label,
        unknown_codes=tuple(unknown), excluded_codes=tuple(excluded), **details,
    )
