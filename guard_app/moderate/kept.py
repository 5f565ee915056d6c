"""The conversation and the settings as the browser keeps them across a reload. No gradio.

The page writes `keep(...)` into a gr.BrowserState (localStorage, encrypted with a secret of
the server process, so a kept copy is only ever one this server made) and reads it back with
`restore(...)`. Images go in as base64 under a byte cap (KEEP_IMAGE_BYTES, well inside what a
browser's localStorage holds); what does not fit is left out and said so. Text is kept within
the conversation limits it was typed under, plus a cap on the kept copy (KEEP_TEXT_CHARS).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from guard.core.errors import InvalidImage
from guard.core.images import load_image

KEEP_IMAGE_BYTES = 1_500_000  # images kept across a reload, all together
KEEP_TEXT_CHARS = 1_000_000  # the kept conversation's text, all together
VERSION = 1
_FOLDER: Path | None = None


def _folder() -> Path:
    """Where restored images are written (once per server process)."""
    global _FOLDER
    if _FOLDER is None:
        _FOLDER = Path(tempfile.mkdtemp(prefix="guard-lab-kept-"))
    return _FOLDER


def keep(turns: Sequence[dict[str, Any]], settings: dict[str, Any], *,
         image_bytes: int = KEEP_IMAGE_BYTES, text_chars: int = KEEP_TEXT_CHARS
         ) -> tuple[dict[str, Any], str]:
    """The kept copy of the conversation and the settings, and what could not be kept ('')."""
    budget, left_out, kept_turns = image_bytes, 0, []
    if sum(len(t["text"]) for t in turns) > text_chars:
        return ({"v": VERSION, "turns": [], "settings": dict(settings)},
                f"This conversation is too long to keep in the browser (over {text_chars:,} "
                "characters): a reload will start with an empty one. The settings are kept.")
    for turn in turns:
        images = []
        for path in turn["images"]:
            try:
                data = Path(path).read_bytes()
            except OSError:
                left_out += 1
                continue
            if len(data) > budget:
                left_out += 1
                continue
            budget -= len(data)
            images.append(base64.b64encode(data).decode("ascii"))
        kept_turns.append({"role": turn["role"], "text": turn["text"], "images": images})
    said = ""
    if left_out:
        said = (f"{left_out} image{'s' if left_out != 1 else ''} of this conversation "
                f"{'are' if left_out != 1 else 'is'} too large to keep in the browser (at most "
                f"{image_bytes / 1e6:.1f} MB of images is kept): after a reload the turns come "
                "back without them.")
    return {"v": VERSION, "turns": kept_turns, "settings": dict(settings)}, said


def restore(kept: Any) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The turns (images written back to files), the settings, and what was lost ('')."""
    if not isinstance(kept, dict) or kept.get("v") != VERSION:
        return [], {}, ""
    turns, lost = [], 0
    for turn in kept.get("turns") or []:
        paths = []
        for encoded in turn.get("images") or []:
            try:
                data = base64.b64decode(encoded, validate=True)
                load_image(data, name="kept image")
            except (ValueError, InvalidImage):
                lost += 1
                continue
            with Image.open(io.BytesIO(data)) as opened:
                suffix = (opened.format or "img").lower()
            path = _folder() / f"{hashlib.sha256(data).hexdigest()[:24]}.{suffix}"
            if not path.exists():
                path.write_bytes(data)
            paths.append(str(path))
        turns.append({"role": str(turn.get("role")), "text": str(turn.get("text", "")),
                      "images": paths})
    said = (f"{lost} kept image{'s' if lost != 1 else ''} could not be read back and "
            f"{'were' if lost != 1 else 'was'} left out." if lost else "")
    return turns, dict(kept.get("settings") or {}), said
