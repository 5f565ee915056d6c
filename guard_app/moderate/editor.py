"""The conversation editor's state and rules, as pure functions over plain lists.

The app keeps the conversation in `gr.State` as a list of turns, each
`{"role": "user" | "assistant", "text": str, "images": [path, ...]}`; images waiting to be
attached to the turn being written are a separate list of paths. Nothing here imports gradio:
the handlers in app.py call these functions and turn `GuardError` into `gr.Error`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard.core import limits
from guard.core.conversation import MAX_IMAGES, ROLES, Conversation, Turn, validate
from guard.core.errors import InvalidConversation
from guard.core.images import load_image
from guard_app.conversation import to_conversation  # noqa: F401 (named here as before)

TurnDict = dict[str, Any]


def next_role(turns: Sequence[TurnDict]) -> str:
    """The role the next turn should have: user first, then alternating."""
    if not turns:
        return "user"
    return "assistant" if turns[-1]["role"] == "user" else "user"


def image_count(turns: Sequence[TurnDict], pending: Sequence[str] = (),
                editing: int | None = None) -> int:
    """Images in the conversation plus those waiting in the composer.

    While a turn is being edited its images sit in the composer, so they are counted there.
    """
    committed = sum(len(t["images"]) for i, t in enumerate(turns) if i != editing)
    return committed + len(pending)


def add_image(turns: Sequence[TurnDict], pending: Sequence[str], path: str | None, *,
              editing: int | None = None, max_images: int = MAX_IMAGES) -> list[str]:
    """Attach an uploaded image to the turn being written; refuse the one too many."""
    if not path:
        return list(pending)
    total = image_count(turns, pending, editing)
    if total >= max_images:
        raise InvalidConversation(
            f"A conversation may carry at most {max_images} images and this one already has "
            f"{total}. Remove an image before adding another.")
    load_image(path, name=Path(path).name)  # refuse broken files now, not at run time
    return [*pending, path]


def commit_turn(turns: Sequence[TurnDict], role: str, text: str, pending: Sequence[str], *,
                editing: int | None = None, max_images: int = MAX_IMAGES) -> list[TurnDict]:
    """Add the composed turn at the end, or save it over turn `editing`."""
    text = (text or "").strip()
    if len(text) > limits.MAX_CHARS_PER_MESSAGE:
        raise InvalidConversation(
            f"This message is {len(text):,} characters; a message may hold at most "
            f"{limits.MAX_CHARS_PER_MESSAGE:,} (GUARD_LAB_MAX_CHARS_PER_MESSAGE). Shorten it.")
    if not text:
        if pending:
            raise InvalidConversation(
                "This turn has images but no text. Llama Guard 4 does not judge images alone: "
                "write a sentence that goes with them.")
        raise InvalidConversation("The message is empty. Write the text of the turn first.")
    if image_count(turns, pending, editing) > max_images:
        raise InvalidConversation(
            f"A conversation may carry at most {max_images} images. Remove an image.")
    new = [dict(t, images=list(t["images"])) for t in turns]
    others = sum(len(t["text"]) for i, t in enumerate(turns) if i != editing)
    if others + len(text) > limits.MAX_CHARS_PER_CONVERSATION:
        raise InvalidConversation(
            f"With this message the conversation holds {others + len(text):,} characters; at "
            f"most {limits.MAX_CHARS_PER_CONVERSATION:,} fit (GUARD_LAB_MAX_CHARS_PER_CONVERSATION)."
            " Shorten the messages or remove some.")
    if editing is None and len(turns) >= limits.MAX_TURNS:
        raise InvalidConversation(
            f"The conversation already has {len(turns):,} messages, the most it may hold "
            "(GUARD_LAB_MAX_TURNS). Remove some before adding another.")
    if editing is not None:
        if not 0 <= editing < len(new):
            raise InvalidConversation("The turn being edited no longer exists. Add it again.")
        new[editing] = {"role": new[editing]["role"], "text": text, "images": list(pending)}
        return new
    if role not in ROLES:
        raise InvalidConversation(f"Unknown role '{role}'. Choose user or assistant.")
    expected = next_role(turns)
    if role != expected:
        if not turns:
            raise InvalidConversation(
                "A conversation starts with the user: Llama Guard judges a user's message or an "
                "assistant's answer to one. Add the user turn first.")
        raise InvalidConversation(
            f"Roles must alternate user, assistant, user, ... The last turn is a {turns[-1]['role']}"
            f" turn, so the next one is a {expected} turn. To judge two {role} messages, put "
            "them in one turn.")
    new.append({"role": role, "text": text, "images": list(pending)})
    return new


def delete_turn(turns: Sequence[TurnDict], index: int) -> list[TurnDict]:
    return [dict(t) for i, t in enumerate(turns) if i != index]


def remove_image(turns: Sequence[TurnDict], turn_index: int, image_index: int) -> list[TurnDict]:
    new = [dict(t, images=list(t["images"])) for t in turns]
    if 0 <= turn_index < len(new) and 0 <= image_index < len(new[turn_index]["images"]):
        del new[turn_index]["images"][image_index]
    return new


def problem(turns: Sequence[TurnDict], max_images: int = MAX_IMAGES) -> str:
    """What keeps this conversation from being judged, in words; '' when nothing does."""
    if not turns:
        return ""
    # Only the counts of images matter to the rules, so the paths stand in for the pictures.
    draft = Conversation(tuple(Turn(t["role"], t["text"], tuple(t["images"])) for t in turns))
    try:
        validate(draft, max_images=max_images)
    except InvalidConversation as exc:
        return str(exc)
    return ""


def has_images(turns: Sequence[TurnDict], pending: Sequence[str] = ()) -> bool:
    return bool(pending) or any(t["images"] for t in turns)


def turn_html(index: int, turn: TurnDict, judged: bool = False) -> str:
    """One turn's header and text. The text is escaped: whatever people type shows as typed."""
    role = turn["role"]
    badge = "User" if role == "user" else "Assistant"
    note = ' <span class="gl-judged">judged by Llama Guard</span>' if judged else ""
    images = len(turn["images"])
    count = f' <span class="gl-muted">· {images} image{"s" if images != 1 else ""}</span>' if images else ""
    return (f'<div class="gl-turn-head"><span class="gl-role gl-role-{role}">{index + 1}. {badge}'
            f'</span>{count}{note}</div>{folded_text(turn["text"])}')


FOLD_CHARS, FOLD_LINES = 600, 12  # a longer turn shows its start, with "show all"


def folded_text(text: str) -> str:
    """A turn's text, escaped; a long one folded to its start with a "show all" to open it."""
    lines = text.split("\n")
    if len(text) <= FOLD_CHARS and len(lines) <= FOLD_LINES:
        return f'<div class="gl-turn-text">{html.escape(text)}</div>'
    start = "\n".join(lines[:FOLD_LINES])[:FOLD_CHARS].rstrip()
    return (f'<details class="gl-fold"><summary><div class="gl-turn-text gl-fold-start">'
            f'{html.escape(start)}…</div><span class="gl-show-all">show all '
            f'({len(text):,} characters)</span></summary>'
            f'<div class="gl-turn-text">{html.escape(text)}</div></details>')


def summary_html(turns: Sequence[TurnDict], pending: Sequence[str], editing: int | None,
                 max_images: int = MAX_IMAGES) -> str:
    """The line under the editor: counts, what comes next, and anything that needs fixing."""
    total = image_count(turns, pending, editing)
    parts = [f"{len(turns)} turn{'s' if len(turns) != 1 else ''}",
             f"{total} of {max_images} images"]
    if editing is not None:
        parts.append(f"editing turn {editing + 1}")
    elif turns:
        parts.append(f"next turn: {next_role(turns)}")
    text = " · ".join(parts)
    issue = problem(turns, max_images)
    if issue:
        return (f'<div class="gl-summary">{html.escape(text)}</div>'
                f'<div class="gl-problem">⚠ {html.escape(issue)}</div>')
    return f'<div class="gl-summary">{html.escape(text)}</div>'
