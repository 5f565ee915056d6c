"""OpenAI-style chat messages and moderation inputs as a validated `Conversation`.

The chat format is the Hugging Face / OpenAI one that `guard.core.conversation.from_messages`
reads, with images carried inside the request instead of named files: an image part is
`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}` (OpenAI's shape;
`"image_url": "data:..."` and `{"type": "image", "url": "data:..."}` are read too). Nothing here
fetches a web address or opens a file: a caller can only judge what it sends.

Everything that costs nothing is checked first (the shape, the count of images, each data
URL's media type and encoded length); only then is base64 decoded and the image's header read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from guard.core import limits
from guard.core.conversation import MAX_IMAGES, Conversation, from_messages
from guard.core.errors import InvalidConversation, InvalidImage

EXAMPLE_PART = '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}'


def data_url_bytes(url: Any, *, label: str = "image") -> bytes:
    """The bytes of a base64 `data:image/...` URL, or InvalidImage saying what to send instead.

    The encoded length is checked against `limits.MAX_IMAGE_BYTES` before anything is decoded;
    the bytes are not yet known to be an image (`guard.core.images.load_image` decides that).
    """
    if not isinstance(url, str) or not url:
        raise InvalidImage(f"{label}: the image URL is missing. Send {EXAMPLE_PART}.")
    if url[:8].lower().startswith(("http://", "https://")):
        raise InvalidImage(f"{label} is a web address; Guard Lab does not fetch images. Send "
                           "the image itself as a data URL: data:image/png;base64,...")
    if not url[:5].lower() == "data:":
        raise InvalidImage(f"{label} is not a data URL. Send data:image/png;base64,... "
                           "(PNG, JPEG, GIF or WebP).")
    header, comma, data = url[5:].partition(",")
    if not comma:
        raise InvalidImage(f"{label}: the data URL has no ',' before its data. Send "
                           "data:image/png;base64,...")
    media, *params = (p.strip().lower() for p in header.split(";"))
    if not media.startswith("image/"):
        raise InvalidImage(f"{label} is a data URL of type '{media or 'text/plain'}', not an "
                           "image. Send data:image/png;base64,... (PNG, JPEG, GIF or WebP).")
    if "base64" not in params:
        raise InvalidImage(f"{label}: the data URL is not base64. Send "
                           f"data:{media};base64,...")
    if len(data) > 4 * (limits.MAX_IMAGE_BYTES // 3 + 1) + 4:
        raise InvalidImage(f"{label} is about {len(data) * 3 / 4 / 2**20:.1f} MB; the limit is "
                           f"{limits.MAX_IMAGE_BYTES / 2**20:g} MB. Resize or recompress it.")
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{label}: the data URL's base64 is damaged. Encode the file "
                           "again.") from None


def _image_url(part: Mapping[str, Any]) -> Any:
    if part.get("type") == "image_url":
        inner = part.get("image_url")
        return inner.get("url") if isinstance(inner, Mapping) else inner
    return part.get("url") or part.get("image")


def _image_parts(messages: Any) -> list[Mapping[str, Any]]:
    parts = []
    if not isinstance(messages, list):
        return parts
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            parts.extend(p for p in content
                         if isinstance(p, Mapping) and p.get("type") in ("image", "image_url"))
    return parts


def chat_conversation(messages: Any, *, max_images: int = MAX_IMAGES) -> Conversation:
    """A conversation from chat messages whose images are data URLs; raises a GuardError."""
    parts = _image_parts(messages)
    if len(parts) > max_images:
        raise InvalidConversation(f"The conversation has {len(parts)} images, more than the "
                                  f"{max_images} it may carry. Remove an image.")
    for part in parts:
        if part.get("type") == "image" and part.get("path") and not _image_url(part):
            raise InvalidConversation(
                f"Image parts carry the image itself here, not a file name "
                f"('{part.get('path')}'). Send {EXAMPLE_PART}.")
    images: dict[str, bytes] = {}
    rewritten = []
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            rewritten.append(message)
            continue
        new_content = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") in ("image", "image_url"):
                key = f"image-{len(images) + 1}"
                images[key] = data_url_bytes(_image_url(part), label=f"Image {len(images) + 1}")
                part = {"type": "image", "path": key}
            new_content.append(part)
        rewritten.append({**message, "content": new_content})
    return from_messages(rewritten if isinstance(messages, list) else messages, images=images,
                         max_images=max_images)


def input_conversations(value: Any, *, max_images: int = MAX_IMAGES,
                        max_inputs: int | None = None) -> list[Conversation]:
    """OpenAI's moderation `input`: one user message per string of a list, or one user message
    of text and image parts."""
    if isinstance(value, str):
        return [chat_conversation([{"role": "user", "content": value}], max_images=max_images)]
    if not isinstance(value, list) or not value:
        raise InvalidConversation("`input` must be a string, a list of strings, or a list of "
                                  f"text and image parts like {EXAMPLE_PART}.")
    if all(isinstance(v, str) for v in value):
        if max_inputs is not None and len(value) > max_inputs:
            raise InvalidConversation(f"`input` holds {len(value)} texts; at most {max_inputs} "
                                      "go in one request. Send the rest in another.")
        conversations = []
        for n, text in enumerate(value, start=1):
            try:
                conversations.append(chat_conversation([{"role": "user", "content": text}],
                                                       max_images=max_images))
            except InvalidConversation as exc:
                raise InvalidConversation(f"input[{n - 1}]: {exc}") from None
        return conversations
    if all(isinstance(v, Mapping) for v in value):
        return [chat_conversation([{"role": "user", "content": list(value)}],
                                  max_images=max_images)]
    raise InvalidConversation("`input` mixes strings and parts. Send a list of strings (one "
                              "result each) or a list of parts (one message, one result).")
