"""The requests' parsers every endpoint shares: a JSON conversation with uploaded images, the
excluded codes and the threshold.

Gradio-free. Image parts are matched to the uploaded files by file name: `{"type": "image",
"path": "photos/cat.png"}` takes the upload named `cat.png`. Image parts without a path take
the uploads that no part named, in order. The server never reads a file the caller did not
upload. /moderate, /sweep, /category_scores, /attribution and the MCP tools parse here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from guard.core.categories import parse_codes
from guard.core.conversation import MAX_IMAGES, Conversation, from_messages
from guard.core.errors import GuardError, InvalidConversation
from guard.core.verdict import DEFAULT_THRESHOLD

EXAMPLE = ('[{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, '
           '{"type": "image", "path": "red.png"}]}]')


def parse_messages(conversation: str | list | None) -> list:
    if isinstance(conversation, list):
        return conversation
    if not conversation or not str(conversation).strip():
        raise InvalidConversation(
            "No conversation given. Send a JSON list of messages, e.g. " + EXAMPLE)
    try:
        messages = json.loads(conversation)
    except json.JSONDecodeError as exc:
        raise InvalidConversation(
            f"The conversation is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}). Send a list of messages, e.g. {EXAMPLE}") from None
    return messages


def _base_name(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name


def match_uploads(messages: Any, files: Sequence[str] | None) -> tuple[Any, dict[str, str]]:
    """Rewrite image parts to name uploads; returns (messages, {name: uploaded path})."""
    uploads = [str(f) for f in (files or [])]
    by_name: dict[str, str] = {}
    for path in uploads:
        by_name.setdefault(Path(path).name, path)
    if not isinstance(messages, list):
        return messages, {}
    unnamed = list(uploads)
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts.extend(p for p in content if isinstance(p, dict) and p.get("type") == "image")
    named = [p for p in parts if p.get("path") or p.get("url") or p.get("image")]
    for part in named:
        name = part.get("path") or part.get("url") or part.get("image")
        if not isinstance(name, str) or _base_name(name) not in by_name:
            raise InvalidConversation(
                f"Image '{name}' was not uploaded. Pass every image as a file (gradio_client: "
                "handle_file) in `images`; files are matched to image parts by file name.")
        path = by_name[_base_name(name)]
        if path in unnamed:
            unnamed.remove(path)
    images: dict[str, str] = {}
    rewritten = json.loads(json.dumps(messages))
    queue = iter(unnamed)
    for message in rewritten:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "image"):
                continue
            name = part.pop("path", None) or part.pop("url", None) or part.pop("image", None)
            path = by_name[_base_name(name)] if name else next(queue, None)
            if path is None:
                raise InvalidConversation(
                    f"The conversation has {len(parts)} image parts but only {len(uploads)} "
                    "files were uploaded. Upload one file per image part.")
            key = f"upload-{len(images)}-{Path(path).name}"
            images[key] = path
            part["path"] = key
    unused = [Path(p).name for p in uploads if p not in images.values()]
    if unused:
        raise InvalidConversation(
            f"Uploaded file(s) {', '.join(unused)} match no image part of the conversation. "
            'Name each file in a part like {"type": "image", "path": "NAME"}, or upload fewer.')
    return rewritten, images


def build_conversation(conversation: str | list | None, files: Sequence[str] | None, *,
                       max_images: int = MAX_IMAGES) -> Conversation:
    messages, images = match_uploads(parse_messages(conversation), files)
    return from_messages(messages, images=images, max_images=max_images)


def parse_threshold(value: float | str | None, default: float = DEFAULT_THRESHOLD) -> float:
    if value is None or value == "":
        return default
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise GuardError(f"The threshold must be a number between 0 and 1, got {value!r}.") from None
    if not 0.0 <= threshold <= 1.0:
        raise GuardError(f"The threshold must be between 0 and 1, got {threshold}.")
    return threshold


def parse_excluded(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """'S1, S2' or ['S1', 'S2'] -> ('S1', 'S2')."""
    if value is None:
        return ()
    if isinstance(value, str):
        return parse_codes(value)
    return parse_codes(list(value))
