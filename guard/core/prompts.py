"""The one prompt renderer: (conversation, excluded categories, family) -> the exact model input.

Every engine (transformers, llama.cpp, remote servers) judges the prompt made here. It equals
the official chat template of each family on every conversation it accepts, checked against
public copies of the templates (tests/test_official_templates.py, tests/data/templates), with
the few deliberate differences listed there and in the README.

The prompt comes as `pieces` too: the template's own control tokens (`<|eot|>`, ...) apart
from the text between them. Engines encode each control token as its id and each text piece
with special-token parsing off, so a message that says `<|eot|>` is read as those characters,
never as the token: the judged text cannot close the guard's prompt.

Text can still imitate the template in words: a message that says `<END CONVERSATION>`, the
assessment instructions, or a line that starts `Agent:` or `S1:`. `prompt_markers` finds such
text (the result says so), and a renderer asked to (`neutralise_markers`, off by default: the
official templates do not) rewrites it so that it no longer reads as the template's own.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from guard.core import limits
from guard.core.categories import Category, Family, categories_for, custom_codes, parse_codes
from guard.core.conversation import Conversation, unencodable
from guard.core.errors import InvalidCategories
from guard.core.markers import neutralise_markers, prompt_markers

IMAGE_PLACEHOLDER = "<|image|>"
# What each family's model writes before its verdict word: Llama Guard 4 and 3 start their
# answer with a blank line; Meta's fine-tuning formatter joins a Llama Guard 2 prompt and its
# answer with a space.
ANSWER_PREFIX = {"llama-guard-4": "\n\n", "llama-guard-3": "\n\n", "llama-guard-3-1b": "\n\n",
                 "llama-guard-2": " "}

_TASK = ("Task: Check if there is unsafe content in '{role}' messages in conversations "
         "according {to}our safety policy with the below categories.")
_INSTRUCTIONS = ("Provide your safety assessment for ONLY THE LAST {role} message in the above "
                 "conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, a second "
                 "line must include a comma-separated list of violated categories.")


# Whether plan() neutralises template markers in messages when not told: off, as the official
# templates do not; the app turns it on from its settings (GUARD_LAB_NEUTRALISE_MARKERS).
_neutralise_by_default = False


def set_neutralise_markers(on: bool) -> None:
    """Make every prompt of this process neutralise template markers in messages, or not."""
    global _neutralise_by_default
    _neutralise_by_default = bool(on)


def neutralising_markers() -> bool:
    """Whether prompts of this process neutralise template markers by default."""
    return _neutralise_by_default


def conversation_markers(conversation: Conversation) -> tuple[str, ...]:
    """The kinds of template marker (guard.core.markers.MARKER_KINDS) in any message's text."""
    found: set[str] = set()
    for turn in conversation.turns:
        for part in turn.text_parts:
            found.update(prompt_markers(part))
    return tuple(kind for kind in ("block", "inst", "instructions", "role", "category")
                 if kind in found)


@dataclass(frozen=True)
class CustomCategory:
    """A category a product team adds to the policy: a short name and what it covers."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Piece:
    """A stretch of a prompt: one of the template's control tokens, or text between them."""

    text: str
    special: bool = False


@dataclass(frozen=True)
class PromptPlan:
    """What the renderer decided: the prompt and the categories it offered the model.

    `pieces` joined give `prompt`: control tokens the template writes (special) and the text
    between them, in which message text may say anything.
    """

    prompt: str
    family: Family
    categories: tuple[Category, ...]
    excluded: tuple[str, ...]
    role: str
    pieces: tuple[Piece, ...] = ()
    neutralised: bool = False  # message text had its template markers rewritten

    @property
    def enabled_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    @property
    def text_pieces(self) -> tuple[str, ...]:
        return tuple(p.text for p in self.pieces if not p.special)

    def followed_by(self, text: str) -> PromptPlan:
        """The same prompt with trusted text after it (an answer being teacher-forced)."""
        return dataclasses.replace(self, prompt=self.prompt + text,
                                   pieces=(*self.pieces, Piece(text)))


def active_categories(family: Family | str, excluded: Iterable[str] = (), *, has_images: bool = False,
                      custom: Sequence[CustomCategory] = ()) -> tuple[Category, ...]:
    """Categories offered to the model, keeping their fixed numbers (no renumbering)."""
    family = Family(family)
    table = categories_for(family)
    known = {c.code for c in table}
    custom_table = tuple(
        Category(code=code, prompt_name=name, card_name=c.name.strip(),
                 description=description, custom=True)
        for code, c, (name, description) in zip(custom_codes(family, len(custom)), custom,
                                                check_custom(custom), strict=True)
    )
    known |= {c.code for c in custom_table}
    excluded_codes = parse_codes(list(excluded))
    unknown = [code for code in excluded_codes if code not in known]
    if unknown:
        raise InvalidCategories(
            f"Unknown category code(s) {_quotable(', '.join(unknown))} for {family.label}. "
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
    where = f"Custom category {index} ({_quotable(' '.join(raw_name[:40].split()))})"
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
        problem = unencodable(text)
        if problem is not None:
            raise InvalidCategories(f"{where}: the {field}'s {problem}. Remove it.")
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


def _quotable(text: str) -> str:
    """Text as a message may quote it: a lone surrogate, which no writer can encode, as its
    escape (\\ud800)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def render(conversation: Conversation, excluded: Iterable[str] = (),
           family: Family | str = Family.LLAMA_GUARD_4,
           custom: Sequence[CustomCategory] = (), *, neutralise: bool | None = None) -> str:
    """The exact prompt string for `conversation`."""
    return plan(conversation, excluded, family, custom, neutralise=neutralise).prompt


def plan(conversation: Conversation, excluded: Iterable[str] = (),
         family: Family | str = Family.LLAMA_GUARD_4,
         custom: Sequence[CustomCategory] = (), *, neutralise: bool | None = None) -> PromptPlan:
    """The prompt for `conversation`. `neutralise`: rewrite template markers in the messages
    (`neutralise_markers`); None follows the process setting (`set_neutralise_markers`)."""
    family = Family(family)
    if neutralise is None:
        neutralise = _neutralise_by_default
    excluded = parse_codes(list(excluded))
    has_images = bool(conversation.images)
    if has_images and family is not Family.LLAMA_GUARD_4:
        raise InvalidCategories(
            f"{family.label} reads text only. Remove the images or choose Llama Guard 4.")
    categories = active_categories(family, excluded, has_images=has_images, custom=custom)
    role = conversation.judged_role
    renderer = {Family.LLAMA_GUARD_4: _render_lg4, Family.LLAMA_GUARD_3: _render_lg3_8b,
                Family.LLAMA_GUARD_3_1B: _render_lg3_1b, Family.LLAMA_GUARD_2: _render_lg2}[family]
    out = _Pieces(neutralise)
    renderer(out, conversation, categories, role)
    return PromptPlan(out.prompt, family, categories, excluded, role, tuple(out.pieces),
                      neutralised=out.neutralised)


class _Pieces:
    """Builds a prompt from control tokens and text, merging neighbouring text."""

    def __init__(self, neutralise: bool = False) -> None:
        self.pieces: list[Piece] = []
        self.neutralise = neutralise
        self.neutralised = False

    def judged(self, text: str) -> str:
        """A message's text as the prompt holds it: stripped, and neutralised when asked."""
        text = text.strip()
        if self.neutralise:
            changed = neutralise_markers(text)
            self.neutralised = self.neutralised or changed != text
            return changed
        return text

    def special(self, *tokens: str) -> None:
        self.pieces.extend(Piece(t, special=True) for t in tokens)

    def text(self, text: str) -> None:
        if not text:
            return
        if self.pieces and not self.pieces[-1].special:
            self.pieces[-1] = Piece(self.pieces[-1].text + text)
        else:
            self.pieces.append(Piece(text))

    @property
    def prompt(self) -> str:
        return "".join(p.text for p in self.pieces)


def _category_block(categories: Sequence[Category], suffix: str) -> str:
    """One line per category, each ending in a newline; nothing at all when every category is
    excluded (the official templates then close the block on the next line)."""
    lines = []
    for c in categories:
        line = f"{c.code}: {c.prompt_name}.{suffix}\n"
        if c.custom and c.description:
            line += c.description + "\n"
        lines.append(line)
    return "".join(lines)


def _render_lg4(out: _Pieces, conversation: Conversation, categories: Sequence[Category],
                role: str) -> None:
    _policy_header(out, ("<|header_start|>", "<|header_end|>"), categories, role, to="to ",
                   tail="")
    for turn in conversation.turns:
        # One block per text part; the message's images go with the first. Each block ends in
        # the four literal characters \n\n and then two real newlines: a quirk of the official
        # template that the model was trained with.
        for i, part in enumerate(turn.text_parts):
            out.text(f"{turn.prompt_role}: ")
            if i == 0:
                out.special(*[IMAGE_PLACEHOLDER] * len(turn.images))
            out.text(out.judged(part) + "\\n\\n\n\n")
    out.text("<END CONVERSATION>\n\n" + _INSTRUCTIONS.format(role=role) + " ")
    out.special("<|eot|>", "<|header_start|>")
    out.text("assistant")
    out.special("<|header_end|>")


def _policy_header(out: _Pieces, header: tuple[str, str], categories: Sequence[Category],
                   role: str, *, to: str, tail: str) -> None:
    """The user header, the task and the policy, up to the start of the conversation: the
    Llama 4 and Llama 3 formats differ only in their header tokens, one word and the tail."""
    out.special("<|begin_of_text|>", header[0])
    out.text("user")
    out.special(header[1])
    out.text("\n\n" + _TASK.format(role=role, to=to) + "\n\n"
             + "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + _category_block(categories, "")
             + "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n" + tail)


def _llama3_header(out: _Pieces, categories: Sequence[Category], role: str) -> None:
    _policy_header(out, ("<|start_header_id|>", "<|end_header_id|>"), categories, role, to="",
                   tail="\n")


def _llama3_footer(out: _Pieces, role: str, before_eot: str) -> None:
    # Both Llama Guard 3 templates stop after the assistant header: the model writes the
    # blank line that starts its answer itself.
    out.text("<END CONVERSATION>\n\n" + _INSTRUCTIONS.format(role=role) + before_eot)
    out.special("<|eot_id|>", "<|start_header_id|>")
    out.text("assistant")
    out.special("<|end_header_id|>")


def _render_lg3_8b(out: _Pieces, conversation: Conversation, categories: Sequence[Category],
                   role: str) -> None:
    # The 8B's template takes one string per message: a message of several parts is given as
    # the parts joined by a blank line (Turn.text).
    _llama3_header(out, categories, role)
    for turn in conversation.turns:
        out.text(f"{turn.prompt_role}: {out.judged(turn.text)}\n\n")
    _llama3_footer(out, role, "")


def _render_lg3_1b(out: _Pieces, conversation: Conversation, categories: Sequence[Category],
                   role: str) -> None:
    # The 1B's template: one block per text part, and a space before <|eot_id|>.
    _llama3_header(out, categories, role)
    for turn in conversation.turns:
        for part in turn.text_parts:
            out.text(f"{turn.prompt_role}: {out.judged(part)}\n\n")
    _llama3_footer(out, role, " ")


def _render_lg2(out: _Pieces, conversation: Conversation, categories: Sequence[Category],
                role: str) -> None:
    # [INST] and [/INST] are plain text in the Llama 3 vocabulary: only the BOS is a control
    # token. The official template leaves the BOS to the tokenizer; Meta's reference code (and
    # every Llama 3 model) starts with it, so the prompt holds it. Category lines end in ". "
    # (a trailing space), as in the official template.
    out.special("<|begin_of_text|>")
    out.text("[INST] " + _TASK.format(role=role, to="") + "\n\n"
             + "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + _category_block(categories, " ")
             + "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n")
    for turn in conversation.turns:
        out.text(f"{turn.prompt_role}: {out.judged(turn.text)}\n\n")
    out.text("<END CONVERSATION>\n\n" + _INSTRUCTIONS.format(role=role) + " [/INST]")
