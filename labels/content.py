"""Pure functions over example content: image blobs, hashes, policy checks, label checks."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from guard.core.categories import Family, parse_codes
from guard.core.conversation import Conversation
from guard.core.errors import GuardError
from guard.core.images import load_image
from guard.core.prompts import CustomCategory, active_categories, render
from labels.errors import InvalidExample, InvalidLabel
from labels.records import LABEL_VALUES, SAFE, UNSAFE, ExampleInput, ImageBlob, LabelInput

MAX_NOTE_CHARS = 10_000
MAX_REVIEWER_CHARS = 100


def image_blob(image: Image.Image) -> ImageBlob:
    image = load_image(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    return ImageBlob(hashlib.sha256(png).hexdigest(), png, image.width, image.height)


def blob_from_png(png: bytes, sha256: str | None = None) -> ImageBlob:
    """Adopt PNG bytes from an export as they are, so the SHA-256 keys stay stable."""
    digest = hashlib.sha256(png).hexdigest()
    if sha256 is not None and digest != sha256:
        raise InvalidExample(f"Image {sha256[:12]}... does not match its SHA-256; the file is damaged.")
    image = load_image(png, name=f"image {digest[:12]}")
    return ImageBlob(digest, png, image.width, image.height)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(family: str, messages: list[dict[str, Any]], excluded: Sequence[str],
                 custom: Sequence[dict[str, str]], model: str, revision: str) -> str:
    """Stable identity of an example: the same conversation, policy and model hash the same."""
    return hashlib.sha256(canonical_json({
        "family": family, "messages": messages, "excluded": sorted(excluded),
        "custom": list(custom), "model": model, "revision": revision,
    }).encode("utf-8")).hexdigest()


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """The searchable text of a stored conversation."""
    return "\n".join(
        part.get("text", "") for message in messages
        for part in (message.get("content") or []) if part.get("type") == "text"
    )


def code_key(code: str) -> tuple[str, int]:
    digits = "".join(ch for ch in code if ch.isdigit())
    return (code.rstrip("0123456789"), int(digits) if digits else 0)


def custom_table(family: str, custom: Sequence[CustomCategory]) -> tuple[dict[str, str], ...]:
    """Custom categories with the codes the prompt renderer gives them."""
    try:
        active = active_categories(family, (), custom=custom)
    except GuardError as exc:
        raise InvalidExample(str(exc)) from None
    return tuple({"code": c.code, "name": c.card_name, "description": c.description}
                 for c in active if c.custom)


def allowed_codes(family: str, excluded: Iterable[str], custom: Sequence[dict[str, str]],
                  has_images: bool) -> tuple[str, ...]:
    """The codes a label may name: those the model was asked about."""
    customs = [CustomCategory(c["name"], c.get("description", "")) for c in custom]
    try:
        categories = active_categories(family, tuple(excluded), has_images=has_images,
                                       custom=customs)
    except GuardError as exc:
        raise InvalidExample(str(exc)) from None
    return tuple(c.code for c in categories)


def check_family(family: str) -> str:
    try:
        return Family(family).value
    except ValueError:
        names = ", ".join(f.value for f in Family)
        raise InvalidExample(f"Unknown model family {family!r}. Use one of {names}.") from None


def check_example(example: ExampleInput) -> tuple[str, tuple[str, ...], tuple[dict[str, str], ...]]:
    """Validate an example; return (rendered prompt, excluded codes, custom table)."""
    if not isinstance(example.conversation, Conversation) or not example.conversation.turns:
        raise InvalidExample("The example has no conversation. Judge a conversation first.")
    family = check_family(example.family)
    output = example.output
    if not output.model.strip():
        raise InvalidExample("The model output does not name its model. Set ModelOutput.model.")
    for name in ("p_unsafe", "threshold"):
        value = getattr(output, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1:
            raise InvalidExample(f"{name} must be a number between 0 and 1, got {value!r}.")
    excluded = parse_codes(list(example.excluded))
    custom = custom_table(family, example.custom)
    allowed_codes(family, excluded, custom, bool(example.conversation.images))
    prompt = example.prompt
    if not prompt:
        try:
            prompt = render(example.conversation, excluded, family, example.custom)
        except GuardError as exc:
            raise InvalidExample(str(exc)) from None
    return prompt, excluded, custom


def check_label(label: LabelInput, allowed: Sequence[str]) -> LabelInput:
    """Validate a label against the example's policy; return it normalised."""
    if not isinstance(label.note, str):
        raise InvalidLabel("The note must be text.")
    if len(label.note) > MAX_NOTE_CHARS:
        raise InvalidLabel(
            f"The note is {len(label.note):,} characters; the limit is {MAX_NOTE_CHARS:,}. "
            "Shorten it or link to a longer document.")
    reviewer = label.reviewer.strip() if isinstance(label.reviewer, str) else ""
    if not reviewer:
        raise InvalidLabel("The label has no reviewer. Enter your name or handle.")
    if len(reviewer) > MAX_REVIEWER_CHARS:
        raise InvalidLabel(f"The reviewer name is longer than {MAX_REVIEWER_CHARS} characters.")
    value = label.label.strip().lower() if isinstance(label.label, str) else ""
    if value not in LABEL_VALUES:
        raise InvalidLabel(f"The label must be 'safe' or 'unsafe', got {label.label!r}.")
    codes = parse_codes(list(label.categories))
    unknown = [code for code in codes if code not in allowed]
    if unknown:
        raise InvalidLabel(
            f"Unknown category code(s) {', '.join(unknown)} for this example. "
            f"Use codes the model was asked about: {', '.join(allowed)}.")
    if value == SAFE and codes:
        raise InvalidLabel("A safe label cannot name categories. Remove them or label it unsafe.")
    none_fits = bool(label.none_fits)
    if none_fits and (value == SAFE or codes):
        raise InvalidLabel("'None fits' goes only with an unsafe label that names no category. "
                           "Untick it, or remove the categories.")
    if value == UNSAFE and not codes and not none_fits:
        raise InvalidLabel("An unsafe label names what it breaks: tick at least one category, "
                           "or tick 'none fits' when none of the family's categories does.")
    return LabelInput(reviewer, value, tuple(sorted(codes, key=code_key)), label.note, none_fits)


@dataclass(frozen=True)
class PreparedExample:
    """An example checked and encoded, ready to be written in one transaction."""

    content_hash: str
    row: dict[str, Any]  # examples columns, without id and created_at
    blobs: tuple[ImageBlob, ...]
    allowed: tuple[str, ...]  # codes a label may name


def prepare_example(example: ExampleInput,
                    blobs: Sequence[ImageBlob] | None = None) -> PreparedExample:
    """Check and encode an example; `blobs` adopts already-encoded images (imports)."""
    prompt, excluded, custom = check_example(example)
    images = example.conversation.images
    if blobs is None:
        blobs = [image_blob(image) for image in images]
    elif len(blobs) != len(images):
        raise InvalidExample(f"The example has {len(images)} images but {len(blobs)} were given.")
    messages = example.conversation.to_messages([b.sha256 for b in blobs])
    output = example.output
    family = check_family(example.family)
    row = {
        "content_hash": content_hash(family, messages, excluded, custom, output.model,
                                     output.revision),
        "family": family, "conversation": canonical_json(messages),
        "conversation_text": conversation_text(messages),
        "excluded_categories": json.dumps(list(excluded)), "custom_categories": json.dumps(custom),
        "prompt": prompt, "image_count": len(blobs),
        "model": output.model, "model_revision": output.revision,
        "raw_output": output.raw_output, "model_label": output.model_label,
        "model_unsafe": int(bool(output.unsafe)),
        "model_categories": json.dumps(list(output.categories)),
        "p_unsafe": float(output.p_unsafe), "threshold": float(output.threshold),
        "prompt_guard_model": output.prompt_guard_model,
        "prompt_guard_revision": output.prompt_guard_revision,
        "prompt_guard_scores": json.dumps(dict(output.prompt_guard_scores)),
        "judged": int(bool(output.judged)),
        "policy": output.policy or None,
        "source": None if not example.source else canonical_json(example.source),
    }
    allowed = allowed_codes(family, excluded, custom, bool(blobs))
    return PreparedExample(row["content_hash"], row, tuple(blobs), allowed)
