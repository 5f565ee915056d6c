"""The page's turns as the engine and the store take them, and stored messages as turns.

Gradio-free. The page keeps a conversation as a list of turns, each `{"role", "text",
"images": [path, ...]}` (guard_app.moderate.editor edits them); every screen that judges or
saves one converts it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard.core.conversation import MAX_IMAGES, Conversation, Turn
from guard.core.errors import InvalidConversation, InvalidImage
from guard.core.images import load_image

TurnDict = dict[str, Any]


def to_conversation(turns: Sequence[TurnDict], max_images: int = MAX_IMAGES) -> Conversation:
    """Decode the images and build the validated conversation the engine takes."""
    if not turns:
        raise InvalidConversation(
            "The conversation is empty. Write a user message and press 'Add turn', or load an "
            "example.")
    built = []
    for turn in turns:
        images = []
        for path in turn["images"]:
            try:
                images.append(load_image(path, name=Path(path).name))
            except InvalidImage as exc:
                raise InvalidImage(f"{exc} Remove it from the conversation.") from None
        built.append(Turn(turn["role"], turn["text"], tuple(images)))
    return Conversation.build(built, max_images=max_images)


def stored_turns(messages: Sequence[dict[str, Any]]) -> list[TurnDict]:
    """A stored item's chat-format messages as the page's turns (text only: runs and imports
    hold no pictures)."""
    turns = []
    for message in messages:
        content = message.get("content", "")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        turns.append({"role": message["role"], "text": str(content), "images": []})
    return turns
