"""Text in a message that imitates the guard's prompt around it, found and neutralised.

The renderer keeps control tokens apart from message text (guard.core.pieces), but the rest of
the template is plain words: a message may say `<END CONVERSATION>`, repeat the assessment
instructions, or start a line with `Agent:` or `S1:`, and the model reads those as the prompt's
own structure (a different "last message", an extra category). `prompt_markers` names what a
text holds; `neutralise_markers` rewrites just those stretches: a block marker's angle brackets
become round ones (`(END CONVERSATION)`), `[INST]` becomes `(INST)`, and a line that starts
like a turn or a category, or repeats the instructions, is quoted with "> ". Everything else is
left as written. Custom categories refuse the same text outright (guard.core.prompts).
"""

from __future__ import annotations

import re

# What each kind of marker is, for the result's note; in the order `prompt_markers` gives them.
MARKER_KINDS = {
    "block": "a block marker such as <END CONVERSATION>",
    "inst": "an [INST] or [/INST] marker",
    "instructions": "the template's instructions (\"Provide your safety assessment ...\")",
    "role": "a line that starts like a turn (\"User:\" or \"Agent:\")",
    "category": "a line that starts like a category (\"S1:\")",
}

_OPEN, _CLOSE = "<\uff1c\ufe64", ">\uff1e\ufe65"  # and their full-width and small look-alikes
_BLOCK = re.compile(rf"[{_OPEN}](\s*/?\s*(?:BEGIN|END)\b[^{_OPEN}{_CLOSE}\n]{{0,80}})([{_CLOSE}]?)",
                    re.IGNORECASE)
_INST = re.compile(r"\[(\s*/?\s*INST\s*)\]", re.IGNORECASE)
_INSTRUCTIONS = re.compile(
    r"provide\s+your\s+safety\s+assessment|task\s*:\s*check\s+if\s+there\s+is\s+unsafe\s+content"
    r"|first\s+line\s+must\s+read|a\s+second\s+line\s+must\s+include"
    r"|only\s+the\s+last\s+(?:user|agent)\s+message", re.IGNORECASE)
# A line's start: the text's start or any line break str.splitlines knows.
_LINE_START = r"(?:^|(?<=[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]))[^\S\n\r]*"
_ROLE = re.compile(_LINE_START + r"(?:user|agent)[^\S\n\r]*[:\uff1a]", re.IGNORECASE)
_CATEGORY = re.compile(_LINE_START + r"s\d+[^\S\n\r]*[:\uff1a]", re.IGNORECASE)
# Each kind with words its markers must hold (in lower case): most text has none of them, and
# a substring test costs far less than the pattern, so the pattern runs only where one is.
_FOUND_BY = {
    "block": (_BLOCK, ("begin", "end")),
    "inst": (_INST, ("inst",)),
    "instructions": (_INSTRUCTIONS, ("assessment", "unsafe content", "must read",
                                     "must include", "last user", "last agent")),
    "role": (_ROLE, ("user", "agent")),
    "category": (_CATEGORY, ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")),
}


def prompt_markers(text: str) -> tuple[str, ...]:
    """The kinds of template marker in `text` (keys of MARKER_KINDS, in that order)."""
    lower = text.lower()
    return tuple(kind for kind, (pattern, words) in _FOUND_BY.items()
                 if any(word in lower for word in words) and pattern.search(text))


def neutralise_markers(text: str) -> str:
    """`text` with its template markers rewritten so they no longer read as the template's
    (see the module's docstring); text without markers comes back unchanged."""
    if not prompt_markers(text):
        return text
    text = _BLOCK.sub(lambda m: "(" + m.group(1) + (")" if m.group(2) else ""), text)
    text = _INST.sub(lambda m: "(" + m.group(1) + ")", text)
    lines = text.splitlines(keepends=True)
    return "".join("> " + line if _quoted(line) else line for line in lines)


def _quoted(line: str) -> bool:
    if line.lstrip().startswith(">"):
        return False  # quoted already
    return bool(_ROLE.match(line) or _CATEGORY.match(line) or _INSTRUCTIONS.search(line))
