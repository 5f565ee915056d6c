"""The one prompt renderer: (conversation, excluded categories, family) -> the exact model input.

Every engine (transformers, llama.cpp, remote servers) sends the string made here, special
tokens included, and tokenizes it without adding any. For Llama Guard 4 it reproduces the
official chat template byte for byte (see tests/test_prompts.py and the golden renders).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import limits
from .categories import Category, Family, categories_for, parse_codes
from .conversation import Conversation
from .errors import InvalidCategories

IMAGE_PLACEHOLDER = "<|image|>"

_TASK = ("Task: Check if there is unsafe content in '{role}' messages in conversations "
         "according {to}our safety policy with the below categories.")
_INSTRUCTIONS = ("Provide your safety assessment for ONLY THE LAST {role} message in the above "
                 "conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second "
                 "line must include a comma-separated list of violated categories.")


@dataclass(frozen=True)
class CustomCategory:
    """A category a product team adds to the policy: a short name and what it covers."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class PromptPlan:
    """What the renderer decided: the prompt and the categories it offered the model."""

    prompt: str
    family: Family
    categories: tuple[Category, ...]
    excluded: tuple[str, ...]
    role: str

    @property
    def enabled_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)


def active_categories(family: Family | str, excluded: Iterable[str] = (), *, has_images: bool = False,
                      custom: Sequence[CustomCategory] = ()) -> tuple[Category, ...]:
    """Categories offered to the model, keeping their fixed numbers (no renumbering)."""
    family = Family(family)
    table = categories_for(family)
    known = {c.code for c in table}
    custom_table = tuple(
        Category(code=f"S{len(table) + i}", prompt_name=name, card_name=c.name.strip(),
                 description=description, custom=True)
        for i, (c, (name, description)) in enumerate(zip(custom, check_custom(custom), strict=True),
                                                     start=1)
    )
    known |= {c.code for c in custom_table}
    excluded_codes = parse_codes(list(excluded))
    unknown = [code for code in excluded_codes if code not in known]
    if unknown:
        raise InvalidCategories(
            f"Unknown category code(s) {', '.join(unknown)} for {family.label}. "
            f"Use codes from {table[0].code} to {(custom_table or table)[-1].code}.")
    return tuple(
        c for c in table + custom_table
        if c.code not in excluded_codes and not (c.text_only and has_images)
    )


# Text that would let a custom category rewrite the prompt around it: the prompt's own block
# markers, special-token text (which the tokenizer turns into real control tokens), the
# Llama Guard 2 wrapper, and a line that starts a category of its own ("S3: ...").
_FORBIDDEN = (
    (re.compile(r"<\|"), "'<|', the start of a special token such as <|eot|>"),
    (re.compile(r"\|>"), "'|>', the end of a special token such as <|eot|>"),
    (re.compile(r"<\s*/?\s*(BEGIN|END)\b", re.IGNORECASE),
     "a block marker such as <END UNSAFE CONTENT CATEGORIES>"),
    (re.compile(r"\[\s*/?\s*INST\s*\]", re.IGNORECASE), "an [INST] or [/INST] marker"),
)
_CATEGORY_LINE = re.compile(r"\s*S\d+\s*:", re.IGNORECASE)


def check_custom(custom: Sequence[CustomCategory]) -> list[tuple[str, str]]:
    """The (prompt name, description) of each custom category as the prompt holds them, or
    InvalidCategories saying what to change. The app can call it as soon as a category is added."""
    if len(custom) > limits.MAX_CUSTOM_CATEGORIES:
        raise InvalidCategories(
            f"{len(custom)} custom categories; at most {limits.MAX_CUSTOM_CATEGORIES} fit in one "
            "policy. Remove some.")
    return [_check_one(c, i) for i, c in enumerate(custom, start=1)]


def _check_one(category: CustomCategory, index: int) -> tuple[str, str]:
    raw_name = str(category.name).strip()
    description = str(category.description or "").strip()
    where = f"Custom category {index} ({' '.join(raw_name[:40].split())})"
    # Lengths first, on the text as given, so nothing long is ever scanned or split.
    for field, text, limit in (("name", raw_name, limits.MAX_CATEGORY_NAME_CHARS),
                               ("description", description, limits.MAX_CATEGORY_DESCRIPTION_CHARS)):
        if len(text) > limit:
            raise InvalidCategories(
                f"{where}: the {field} is {len(text):,} characters; at most {limit:,}. "
                "Shorten it.")
    name = " ".join(raw_name.split()).rstrip(".")
    if not name:
        raise InvalidCategories(f"Custom category {index} has no name. Give it a short name.")
    for field, text in (("name", name), ("description", description)):
        for pattern, what in _FORBIDDEN:
            if pattern.search(text):
                raise InvalidCategories(
                    f"{where}: the {field} contains {what}, which would change the prompt "
                    "around it. Remove it.")
        bad = next((ch for ch in text if ch not in "\n\t"
                    and unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)
        if bad is not None:
            raise InvalidCategories(
                f"{where}: the {field} contains the invisible character U+{ord(bad):04X}. "
                "Write it as plain text, one line break per line.")
        lines = [name] if field == "name" else text.split("\n")
        if any(_CATEGORY_LINE.match(line) for line in lines):
            raise InvalidCategories(
                f"{where}: a line of the {field} starts like a category of its own "
                "('S1: ...'), which the model would read as one. Reword that line.")
    return name, description


def render(conversation: Conversation, excluded: Iterable[str] = (),
           family: Family | str = Family.LLAMA_GUARD_4,
           custom: Sequence[CustomCategory] = ()) -> str:
    """The exact prompt string for `conversation`."""
    return plan(conversation, excluded, family, custom).prompt


def plan(conversation: Conversation, excluded: Iterable[str] = (),
         family: Family | str = Family.LLAMA_GUARD_4,
         custom: Sequence[CustomCategory] = ()) -> PromptPlan:
    family = Family(family)
    excluded = parse_codes(list(excluded))
    has_images = bool(conversation.images)
    if has_images and family is not Family.LLAMA_GUARD_4:
        raise InvalidCategories(
            f"{family.label} reads text only. Remove the images or choose Llama Guard 4.")
    categories = active_categories(family, excluded, has_images=has_images, custom=custom)
    role = conversation.judged_role
    renderer = {Family.LLAMA_GUARD_4: _render_lg4, Family.LLAMA_GUARD_3: _render_lg3,
                Family.LLAMA_GUARD_2: _render_lg2}[family]
    return PromptPlan(renderer(conversation, categories, role), family, categories, excluded, role)


def _category_lines(categories: Sequence[Category], suffix: str) -> str:
    lines = []
    for c in categories:
        line = f"{c.code}: {c.prompt_name}.{suffix}"
        if c.custom and c.description:
            line += "\n" + c.description
        lines.append(line)
    return "\n".join(lines)


def _render_lg4(conversation: Conversation, categories: Sequence[Category], role: str) -> str:
    # Each message ends in the four literal characters \n\n and then two real newlines:
    # a quirk of the official template that the model was trained with.
    messages = "".join(
        f"{turn.prompt_role}: {IMAGE_PLACEHOLDER * len(turn.images)}{turn.text.strip()}\\n\\n\n\n"
        for turn in conversation.turns
    )
    return (
        "<|begin_of_text|><|header_start|>user<|header_end|>\n\n"
        + _TASK.format(role=role, to="to ") + "\n\n"
        + "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + _category_lines(categories, "") + "\n"
        + "<END UNSAFE CONTENT CATEGORIES>\n\n"
        + "<BEGIN CONVERSATION>\n" + messages + "<END CONVERSATION>\n\n"
        + _INSTRUCTIONS.format(role=role) + " <|eot|><|header_start|>assistant<|header_end|>"
    )


def _conversation_block(conversation: Conversation) -> str:
    return "\n\n".join(f"{turn.prompt_role}: {turn.text.strip()}" for turn in conversation.turns)


def _render_lg3(conversation: Conversation, categories: Sequence[Category], role: str) -> str:
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        + _TASK.format(role=role, to="") + "\n\n"
        + "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + _category_lines(categories, "") + "\n"
        + "<END UNSAFE CONTENT CATEGORIES>\n\n"
        + "<BEGIN CONVERSATION>\n\n" + _conversation_block(conversation) + "\n\n<END CONVERSATION>\n\n"
        + _INSTRUCTIONS.format(role=role)
        + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def _render_lg2(conversation: Conversation, categories: Sequence[Category], role: str) -> str:
    # Llama Guard 2 category lines end in ". " (a trailing space), as in Meta's reference code.
    return (
        "<|begin_of_text|>[INST] " + _TASK.format(role=role, to="") + "\n\n"
        + "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + _category_lines(categories, " ") + "\n"
        + "<END UNSAFE CONTENT CATEGORIES>\n\n"
        + "<BEGIN CONVERSATION>\n\n" + _conversation_block(conversation) + "\n\n<END CONVERSATION>\n\n"
        + _INSTRUCTIONS.format(role=role) + " [/INST]"
    )
