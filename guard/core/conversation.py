"""Conversations: ordered user/assistant turns with images, validated against Llama Guard's rules."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from guard.core import limits
from guard.core.errors import InvalidConversation, InvalidImage
from guard.core.images import ImageSource, load_image

MAX_IMAGES = 5
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One message. `images` are decoded RGB images, in the order they were attached.

    `parts` holds the message's text parts when it came with several (chat-format content
    lists); the official Llama Guard 4 and 3 1B templates write each part as its own
    `User: ...` block. `text` is then the non-empty parts joined by a blank line: what Prompt
    Guard reads, what the page shows, and what the single-text families (Llama Guard 3 8B, 2)
    are given.
    """

    role: str
    text: str
    images: tuple[Image.Image, ...] = field(default=(), compare=False)
    parts: tuple[str, ...] = ()

    @property
    def text_parts(self) -> tuple[str, ...]:
        """The text parts as the message gave them (one, unless it had several)."""
        return self.parts or (self.text,)

    @property
    def prompt_role(self) -> str:
        """How the guard prompt names this role."""
        return "User" if self.role == "user" else "Agent"


@dataclass(frozen=True)
class Conversation:
    """A validated conversation. Build it with `Conversation.build` or `from_messages`."""

    turns: tuple[Turn, ...]

    @classmethod
    def build(cls, turns: Iterable[Turn], *, max_images: int = MAX_IMAGES) -> Conversation:
        conversation = cls(tuple(turns))
        validate(conversation, max_images=max_images)
        return conversation

    @property
    def images(self) -> tuple[Image.Image, ...]:
        return tuple(image for turn in self.turns for image in turn.images)

    @property
    def judged_role(self) -> str:
        """Llama Guard judges only the last message: 'User' or 'Agent'."""
        return self.turns[-1].prompt_role

    def prefix(self, n: int) -> Conversation:
        """The first `n` turns (still a valid conversation when n >= 1)."""
        return Conversation(self.turns[:n])

    def to_messages(self, image_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Hugging Face chat format; image parts name `image_names` in order when given."""
        names = iter(image_names or ())
        messages = []
        for turn in self.turns:
            content: list[dict[str, Any]] = [{"type": "text", "text": t} for t in turn.text_parts]
            for _ in turn.images:
                part: dict[str, Any] = {"type": "image"}
                name = next(names, None)
                if name is not None:
                    part["path"] = name
                content.append(part)
            messages.append({"role": turn.role, "content": content})
        return messages


def join_parts(parts: Sequence[str]) -> str:
    """A message's text parts as one text: the non-empty ones, stripped, a blank line apart."""
    return "\n\n".join(p.strip() for p in parts if p.strip())


def user(text: str, *images: Image.Image) -> Turn:
    return Turn("user", text, tuple(images))


def assistant(text: str, *images: Image.Image) -> Turn:
    return Turn("assistant", text, tuple(images))


def validate(conversation: Conversation, *, max_images: int = MAX_IMAGES) -> None:
    """Raise InvalidConversation with a message that says what to fix.

    Sizes are counted here, before any tokenizer runs: the messages against `limits.MAX_TURNS`,
    the characters of each message and of them all against `limits.MAX_CHARS_PER_MESSAGE` and
    `limits.MAX_CHARS_PER_CONVERSATION` (what can fit the model's context; see guard.core.limits).
    """
    turns = conversation.turns
    if not turns:
        raise InvalidConversation("The conversation is empty. Add a user message to judge.")
    _check_turn_count(len(turns))
    seen_images = 0
    total_chars = 0
    for index, turn in enumerate(turns, start=1):
        where = f"Message {index} ({_shown_role(turn.role)})"
        if turn.role == "system":
            raise InvalidConversation(
                f"{where}: Llama Guard has no system messages. Remove it; to change the policy, "
                "exclude categories or add custom ones.")
        if turn.role not in ROLES:
            raise InvalidConversation(
                f"{where}: unknown role {_shown_role(turn.role)}. Use 'user' or 'assistant'.")
        expected = ROLES[(index - 1) % 2]
        if turn.role != expected:
            if index == 1:
                raise InvalidConversation(
                    "Message 1 must be a user message: Llama Guard conversations start with the "
                    "user. Add a user message first.")
            raise InvalidConversation(
                f"{where}: roles must alternate user, assistant, user, ... Message {index} should "
                f"be a {expected} message. Merge it with the one before or insert a {expected} turn.")
        if not isinstance(turn.text, str) or not all(isinstance(p, str) for p in turn.parts) \
                or not turn.text.strip():
            if turn.images:
                raise InvalidConversation(
                    f"{where} has images but no text. Llama Guard 4 does not judge images alone: "
                    "add a sentence that goes with them.")
            raise InvalidConversation(f"{where}: the text is empty. Write the message or delete it.")
        for part, text in enumerate(turn.text_parts, start=1):
            check_encodable(text, f"{where}, text part {part}" if turn.parts else where)
        # The prompt holds each text stripped, so surrounding whitespace costs nothing.
        chars = sum(len(p.strip()) for p in turn.text_parts)
        _check_message_chars(index, turn.role, chars)
        total_chars += chars
        _check_conversation_chars(index, total_chars)
        seen_images += len(turn.images)
        if seen_images > max_images:
            raise InvalidConversation(
                f"{where}: this makes {seen_images} images, more than the {max_images} a "
                f"conversation may carry. Remove an image.")


# A str may hold surrogate code points (the JSON escape "\ud800" decodes to one): they are
# half of a UTF-16 pair, not text, and no tokenizer, database or JSON writer can encode them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unencodable(text: str) -> str | None:
    """Where `text` cannot be encoded as UTF-8 and why ("character 4 is U+D800, ..."), or None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (f"character {found.start() + 1:,} is U+{ord(found.group()):04X}, a lone UTF-16 "
            "surrogate: half of a character, not text, so it cannot be encoded as UTF-8")


def check_encodable(text: str, where: str) -> None:
    """Refuse text that cannot be encoded as UTF-8, naming where it is ("Message 2 (user)")
    and the position of the character."""
    problem = unencodable(text)
    if problem is not None:
        raise InvalidConversation(
            f"{where}: {problem}. Remove it, or send the whole character (a JSON escape needs "
            "both halves, as in \\ud83d\\ude00).")


def _shown_role(role: object) -> str:
    """A role as a message may quote it: the role itself when valid, else its repr, short."""
    if role in ROLES or role == "system":
        return str(role)
    shown = repr(role) if isinstance(role, str) else type(role).__name__
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _context_words() -> str:
    return (f"Llama Guard's {limits.CONTEXT_TOKENS:,}-token context holds about "
            f"{limits.CONTEXT_TOKENS * limits.TYPICAL_CHARS_PER_TOKEN:,} characters of ordinary text")


def _check_turn_count(count: int) -> None:
    if count > limits.MAX_TURNS:
        raise InvalidConversation(
            f"The conversation has {count:,} messages; at most {limits.MAX_TURNS:,} fit in "
            f"Llama Guard's {limits.CONTEXT_TOKENS:,}-token context. Remove the oldest messages.")


def _check_message_chars(index: int, role: object, chars: int) -> None:
    if chars > limits.MAX_CHARS_PER_MESSAGE:
        raise InvalidConversation(
            f"Message {index} ({_shown_role(role)}) is {chars:,} characters; Guard Lab accepts "
            f"at most {limits.MAX_CHARS_PER_MESSAGE:,}, and {_context_words()}. Shorten it.")


def _check_conversation_chars(index: int, total: int) -> None:
    if total > limits.MAX_CHARS_PER_CONVERSATION:
        raise InvalidConversation(
            f"Messages 1 to {index} hold {total:,} characters; Guard Lab accepts at most "
            f"{limits.MAX_CHARS_PER_CONVERSATION:,} in a conversation, and {_context_words()}. "
            "Shorten the messages or remove some.")


def from_messages(messages: Any, *, base_dir: str | Path | None = None,
                  images: Mapping[str, ImageSource] | None = None,
                  max_images: int = MAX_IMAGES) -> Conversation:
    """Build a Conversation from the Hugging Face chat format.

    Image parts name a file: `{"type": "image", "path": "a.png"}` is read relative to `base_dir`;
    when `images` is given, the name is looked up there first (uploads in the API).
    """
    if not isinstance(messages, list):
        raise InvalidConversation(
            "A conversation must be a JSON list of messages like "
            '[{"role": "user", "content": [{"type": "text", "text": "..."}]}].')
    _check_turn_count(len(messages))
    # First everything that costs nothing to check (shape, sizes, image count); only then
    # decode the images.
    pending: list[tuple[str, str, list[Mapping[str, Any]]]] = []
    total_images = 0
    total_chars = 0
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, Mapping) or "role" not in message:
            raise InvalidConversation(
                f"Message {index} must be an object with 'role' and 'content'.")
        role = message["role"]
        where = f"Message {index} ({_shown_role(role)})"
        content = message.get("content")
        texts: list[str] = []
        image_parts: list[Mapping[str, Any]] = []
        chars = 0
        if isinstance(content, str):
            texts.append(content.strip())
            chars = len(texts[-1])
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind == "text":
                    text = str(part.get("text", ""))
                    texts.append(text.strip())
                    chars += len(texts[-1])
                    _check_message_chars(index, role, chars)
                    check_encodable(text, f"{where}, text part {len(texts)}")
                elif kind == "image":
                    total_images += 1
                    if total_images > max_images:
                        raise InvalidConversation(
                            f"Message {index} ({role}): this makes {total_images} images, more "
                            f"than the {max_images} a conversation may carry. Remove an image.")
                    image_parts.append(part)
                else:
                    raise InvalidConversation(
                        f"Message {index}: content parts must be {{'type': 'text'}} or "
                        f"{{'type': 'image'}}, got {kind!r}.")
        else:
            raise InvalidConversation(
                f"Message {index}: 'content' must be a string or a list of text and image parts.")
        _check_message_chars(index, role, chars)
        if isinstance(content, str):
            check_encodable(content, where)
        total_chars += chars
        _check_conversation_chars(index, total_chars)
        # The official templates trim each text part and write each as a block of its own.
        pending.append((str(role), texts, image_parts))
    turns = [Turn(role, join_parts(texts), tuple(_image_part(part, index, base_dir, images)
                                                 for part in image_parts),
                  tuple(texts) if len(texts) > 1 else ())
             for index, (role, texts, image_parts) in enumerate(pending, start=1)]
    return Conversation.build(turns, max_images=max_images)


def _image_part(part: Mapping[str, Any], index: int, base_dir: str | Path | None,
                uploads: Mapping[str, ImageSource] | None) -> Image.Image:
    if isinstance(part.get("image"), Image.Image):
        return load_image(part["image"])
    name = part.get("path") or part.get("url") or part.get("image")
    if not isinstance(name, str) or not name:
        raise InvalidConversation(
            f"Message {index}: an image part needs a 'path' naming the image file.")
    check_encodable(name, f"Message {index}, image name")
    if uploads is not None and name in uploads:
        return load_image(uploads[name], name=name)
    if name.startswith(("http://", "https://")):
        raise InvalidImage(
            f"Message {index}: image '{name}' is a web address; Guard Lab reads local files only. "
            "Download it and name the file instead.")
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return load_image(path, name=name)


def load_conversation_file(path: str | Path, *, max_images: int = MAX_IMAGES) -> Conversation:
    """Read a conversation JSON file; image paths are relative to the file."""
    path = Path(path)
    try:
        messages = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidConversation(f"No conversation file at {path}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidConversation(f"{path} is not valid JSON ({exc}). Fix the file.") from None
    return from_messages(messages, base_dir=path.parent, max_images=max_images)
