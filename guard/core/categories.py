"""Hazard taxonomies of the Llama Guard families.

`prompt_name` is what the model was trained on and goes into the prompt verbatim; `card_name`
and `description` come from the model cards and are what people read in the UI.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class Family(enum.StrEnum):
    """A Llama Guard generation: fixes the prompt format and the category table."""

    LLAMA_GUARD_4 = "llama-guard-4"
    LLAMA_GUARD_3 = "llama-guard-3"  # the 8B (and its INT8 build)
    LLAMA_GUARD_3_1B = "llama-guard-3-1b"  # its own template: 13 categories, " <|eot_id|>"
    LLAMA_GUARD_2 = "llama-guard-2"

    @property
    def label(self) -> str:
        return {"llama-guard-4": "Llama Guard 4", "llama-guard-3": "Llama Guard 3",
                "llama-guard-3-1b": "Llama Guard 3 1B",
                "llama-guard-2": "Llama Guard 2"}[self.value]


@dataclass(frozen=True)
class Category:
    """One hazard category, or a custom one a product team adds."""

    code: str
    prompt_name: str
    card_name: str
    description: str
    text_only: bool = False
    custom: bool = False


def _table(rows: list[tuple[str, str, str, str]]) -> tuple[Category, ...]:
    return tuple(
        Category(code=code, prompt_name=prompt, card_name=card, description=desc,
                 text_only=code == "S14")
        for code, prompt, card, desc in rows
    )


# MLCommons hazard taxonomy as used by Llama Guard 3 and 4 (S1-S14).
LLAMA_GUARD_4_CATEGORIES: tuple[Category, ...] = _table([
    ("S1", "Violent Crimes", "Violent Crimes",
     "Enables, encourages or endorses violent crimes: terrorism, genocide, murder, hate-motivated "
     "violence, child abuse, assault, battery, kidnapping, animal abuse."),
    ("S2", "Non-Violent Crimes", "Non-Violent Crimes",
     "Enables, encourages or endorses non-violent crimes: fraud, scams, money laundering, theft, "
     "arson, vandalism, drug crimes, weapons crimes, hacking and other cyber crimes."),
    ("S3", "Sex Crimes", "Sex-Related Crimes",
     "Enables, encourages or endorses sex-related crimes: sex trafficking, sexual assault, sexual "
     "harassment, prostitution."),
    ("S4", "Child Exploitation", "Child Sexual Exploitation",
     "Contains, describes, enables, encourages or endorses the sexual abuse of children."),
    ("S5", "Defamation", "Defamation",
     "Verifiably false statements about a real, living person that are likely to injure their "
     "reputation."),
    ("S6", "Specialized Advice", "Specialized Advice",
     "Specialized financial, medical or legal advice, or claims that dangerous activities or "
     "objects are safe."),
    ("S7", "Privacy", "Privacy",
     "Sensitive, nonpublic personal information that could undermine someone's physical, digital "
     "or financial security."),
    ("S8", "Intellectual Property", "Intellectual Property",
     "Content that may violate the intellectual property rights of a third party."),
    ("S9", "Indiscriminate Weapons", "Indiscriminate Weapons",
     "Enables the creation of chemical, biological, radiological, nuclear or high-yield "
     "explosive weapons."),
    ("S10", "Hate", "Hate",
     "Demeans or dehumanizes people on the basis of sensitive, personal characteristics."),
    ("S11", "Self-Harm", "Suicide & Self-Harm",
     "Enables, encourages or endorses intentional self-harm: suicide, self-injury, disordered "
     "eating."),
    ("S12", "Sexual Content", "Sexual Content", "Sexually explicit content (erotica)."),
    ("S13", "Elections", "Elections",
     "Factually incorrect information about electoral systems and processes, including the "
     "time, place or manner of voting."),
    ("S14", "Code Interpreter Abuse", "Code Interpreter Abuse",
     "Attempts to abuse code interpreters: denial of service, container escapes, privilege "
     "escalation. Text only: left out of the prompt whenever the conversation has images."),
])

LLAMA_GUARD_3_CATEGORIES: tuple[Category, ...] = LLAMA_GUARD_4_CATEGORIES

# Llama Guard 3 1B was trained without S14 (its official template lists S1-S13).
LLAMA_GUARD_3_1B_CATEGORIES: tuple[Category, ...] = tuple(
    c for c in LLAMA_GUARD_4_CATEGORIES if c.code != "S14")

# Llama Guard 2 has its own 11 categories and numbering (no Defamation, Elections, S14).
LLAMA_GUARD_2_CATEGORIES: tuple[Category, ...] = tuple(
    Category(code=f"S{i}", prompt_name=c.prompt_name, card_name=c.card_name,
             description=c.description)
    for i, c in enumerate(
        (c for c in LLAMA_GUARD_4_CATEGORIES if c.code not in {"S5", "S13", "S14"}), start=1)
)

_TABLES = {
    Family.LLAMA_GUARD_4: LLAMA_GUARD_4_CATEGORIES,
    Family.LLAMA_GUARD_3: LLAMA_GUARD_3_CATEGORIES,
    Family.LLAMA_GUARD_3_1B: LLAMA_GUARD_3_1B_CATEGORIES,
    Family.LLAMA_GUARD_2: LLAMA_GUARD_2_CATEGORIES,
}


def guess_family(name: str) -> Family:
    """The family a model id or file name suggests; Llama Guard 3 (8B) when it says nothing.

    A name with "-1B" in it (Llama-Guard-3-1B, Llama-Guard-3-1B-INT4, their GGUF builds) is the
    1B, which has a prompt format of its own.
    """
    lowered = name.lower().replace("_", "-")
    if "guard-2" in lowered:
        return Family.LLAMA_GUARD_2
    if "guard-4" in lowered:
        return Family.LLAMA_GUARD_4
    if "-1b" in lowered:
        return Family.LLAMA_GUARD_3_1B
    return Family.LLAMA_GUARD_3


def categories_for(family: Family | str) -> tuple[Category, ...]:
    """The fixed category table of a model family."""
    return _TABLES[Family(family)]


def category_codes(family: Family | str) -> tuple[str, ...]:
    return tuple(c.code for c in categories_for(family))


def custom_codes(family: Family | str, n: int) -> tuple[str, ...]:
    """The codes of `n` custom categories: numbered on after the family's last code, as the
    prompt numbers them (S15.. for Llama Guard 4 and 3 8B, S14.. for the 3 1B, S12.. for 2)."""
    first = len(categories_for(family)) + 1
    return tuple(f"S{first + i}" for i in range(n))


class Named(Protocol):
    """Anything with a name: a `guard.core.prompts.CustomCategory`."""

    name: str


def _custom_name(category: str | Named | Mapping[str, str]) -> str:
    if isinstance(category, str):
        return category.strip()
    if isinstance(category, Mapping):
        return str(category["name"]).strip()
    return str(category.name).strip()


# How S14 is offered while the conversation has images: shown, but off (it is text only).
TEXT_ONLY_OFF = "(off while the conversation has images)"


def choices(family: Family | str, custom: Sequence[str | Named | Mapping[str, str]] = (),
            images: bool = False, *, excluded: str | Iterable[str] = ()
            ) -> list[tuple[str, str]]:
    """The (label, code) pairs a screen offers for a family's categories, in code order.

    Each fixed category is labelled with its code and model-card name ("S3 Sex-Related
    Crimes"); with `images`, a text-only one says it is off ("S14 Code Interpreter Abuse (off
    while the conversation has images)") but is still offered. `custom` (names, or anything with
    a `name`: CustomCategory, {"name": ...}) follow, numbered after the family's last code as
    the prompt numbers them ("S15 Medical advice" for Llama Guard 4). Codes in `excluded` are
    left out ("S1,S2" or a list); the others keep their numbers.
    """
    left_out = set(parse_codes(excluded if isinstance(excluded, str) else list(excluded)))
    fixed = [(f"{c.code} {c.card_name} {TEXT_ONLY_OFF}" if images and c.text_only
              else f"{c.code} {c.card_name}", c.code) for c in categories_for(family)]
    added = [(f"{code} {_custom_name(c)}".rstrip(), code)
             for code, c in zip(custom_codes(family, len(custom)), custom, strict=True)]
    return [(label, code) for label, code in fixed + added if code not in left_out]


def parse_codes(text: str | None) -> tuple[str, ...]:
    """Turn 'S1, s2,S3' (or a list of them) into ('S1', 'S2', 'S3'); empty input gives ()."""
    if not text:
        return ()
    parts = text if isinstance(text, (list, tuple)) else text.replace(";", ",").split(",")
    codes = []
    for part in parts:
        code = str(part).strip().upper()
        if code and code not in codes:
            codes.append(code)
    return tuple(codes)
