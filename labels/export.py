"""Exports that `datasets.load_dataset` reads as they are, the fine-tuning format, and import.

JSONL carries images inline (base64 PNG, named by SHA-256) so one file is a whole export and
can be imported into another database. Parquet uses the datasets Image layout
(struct {bytes, path}) with the feature recorded in the schema metadata, so images decode.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from guard.core.conversation import from_messages
from guard.core.errors import GuardError
from guard.core.prompts import CustomCategory
from labels.content import blob_from_png, prepare_example
from labels.errors import ImportFailed, LabelsError
from labels.records import (
    UNSAFE,
    ExampleFilter,
    ExampleInput,
    ImportResult,
    LabelInput,
    ModelOutput,
    StoredExample,
)
from labels.store import MAX_PAGE, Store

FORMATS = ("jsonl", "parquet", "llama-guard")


def example_record(example: StoredExample) -> dict[str, Any]:
    """The columns every export shares; images are added per format."""
    output = example.output
    return {
        "id": example.id, "created_at": example.created_at,
        "content_hash": example.content_hash, "family": example.family,
        "messages": [
            {"role": m["role"], "content": [
                {"type": p["type"], "text": p.get("text"), "path": p.get("path")}
                for p in m["content"]]}
            for m in example.messages],
        "excluded_categories": list(example.excluded),
        "custom_categories": [dict(c) for c in example.custom],
        "prompt": example.prompt, "model": output.model, "model_revision": output.revision,
        "raw_output": output.raw_output, "model_label": output.model_label,
        "model_unsafe": output.unsafe, "model_categories": list(output.categories),
        "p_unsafe": output.p_unsafe, "threshold": output.threshold,
        "prompt_guard_model": output.prompt_guard_model,
        "prompt_guard_revision": output.prompt_guard_revision,
        "prompt_guard_scores": [{"label": k, "score": float(v)}
                                for k, v in sorted(output.prompt_guard_scores.items())],
        "labels": [{"reviewer": label.reviewer, "label": label.label,
                    "categories": list(label.categories), "note": label.note,
                    "model_was_right": label.model_was_right, "created_at": label.created_at,
                    "updated_at": label.updated_at} for label in example.labels],
    }


@contextmanager
def _replace_atomically(path: Path, mode: str) -> Iterator[IO[Any]]:
    """Write beside `path` and rename over it, so a failed export leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def selected_examples(store: Store, filters: ExampleFilter | None = None
                      ) -> Iterator[StoredExample]:
    """The examples the filter lists (all of them, not one page), oldest first; every example
    when `filters` is None. Its limit and offset are ignored."""
    if filters is None:
        yield from store.iter_examples()
        return
    ids: set[int] = set()
    offset = 0
    while True:
        page = store.list_examples(replace(filters, limit=MAX_PAGE, offset=offset))
        ids.update(s.id for s in page)
        if len(page) < MAX_PAGE:
            break
        offset += MAX_PAGE
    for example_id in sorted(ids):
        yield store.get_example(example_id)


def export_jsonl(store: Store, path: str | Path, filters: ExampleFilter | None = None) -> int:
    """One example per line, images as base64 PNG. Returns the number of examples."""
    count = 0
    with _replace_atomically(Path(path), "w") as handle:
        for example in selected_examples(store, filters):
            record = example_record(example)
            record["images"] = [
                {"sha256": b.sha256, "width": b.width, "height": b.height,
                 "png_base64": base64.b64encode(b.png).decode("ascii")}
                for b in example.images]
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


_STR = pa.string()
PARQUET_SCHEMA = pa.schema([
    ("id", pa.int64()), ("created_at", _STR), ("content_hash", _STR), ("family", _STR),
    ("messages", pa.list_(pa.struct([
        ("role", _STR),
        ("content", pa.list_(pa.struct([("type", _STR), ("text", _STR), ("path", _STR)])))]))),
    ("excluded_categories", pa.list_(_STR)),
    ("custom_categories", pa.list_(pa.struct([("code", _STR), ("name", _STR),
                                              ("description", _STR)]))),
    ("prompt", _STR), ("model", _STR), ("model_revision", _STR), ("raw_output", _STR),
    ("model_label", _STR), ("model_unsafe", pa.bool_()), ("model_categories", pa.list_(_STR)),
    ("p_unsafe", pa.float64()), ("threshold", pa.float64()), ("prompt_guard_model", _STR),
    ("prompt_guard_revision", _STR),
    ("prompt_guard_scores", pa.list_(pa.struct([("label", _STR), ("score", pa.float64())]))),
    ("labels", pa.list_(pa.struct([
        ("reviewer", _STR), ("label", _STR), ("categories", pa.list_(_STR)), ("note", _STR),
        ("model_was_right", pa.bool_()), ("created_at", _STR), ("updated_at", _STR)]))),
    ("image_sha256", pa.list_(_STR)),
    ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", _STR)]))),
], metadata={"huggingface": json.dumps({"info": {"features": {"images": [{"_type": "Image"}]}}})})


def export_parquet(store: Store, path: str | Path, filters: ExampleFilter | None = None, *,
                   batch_size: int = 256) -> int:
    """Parquet with a datasets Image list column. Returns the number of examples."""
    count = 0
    with _replace_atomically(Path(path), "wb") as handle:
        writer = pq.ParquetWriter(handle, PARQUET_SCHEMA)
        batch: list[dict[str, Any]] = []
        for example in selected_examples(store, filters):
            record = example_record(example)
            record["image_sha256"] = [b.sha256 for b in example.images]
            record["images"] = [{"bytes": b.png, "path": f"{b.sha256}.png"}
                                for b in example.images]
            batch.append(record)
            count += 1
            if len(batch) >= batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
                batch = []
        writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
        writer.close()
    return count


def llama_guard_target(label: str, categories: tuple[str, ...]) -> str:
    """The answer Llama Guard is trained to give: 'safe' or 'unsafe\\nS1,S3'."""
    if label != UNSAFE:
        return "safe"
    return "unsafe\n" + ",".join(categories) if categories else "unsafe"


def export_llama_guard(store: Store, path: str | Path,
                       filters: ExampleFilter | None = None) -> int:
    """{"prompt", "target"} per active label, the prompt exactly as the model saw it."""
    count = 0
    with _replace_atomically(Path(path), "w") as handle:
        for example in selected_examples(store, filters):
            for label in example.labels:
                row = {"prompt": example.prompt,
                       "target": llama_guard_target(label.label, label.categories)}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    return count


EXPORTERS: dict[str, Callable[[Store, str | Path, ExampleFilter | None], int]] = {
    "jsonl": export_jsonl, "parquet": export_parquet, "llama-guard": export_llama_guard,
}


def export(store: Store, fmt: str, path: str | Path, filters: ExampleFilter | None = None) -> int:
    """Write the examples `filters` selects (all when None) in format `fmt`."""
    if fmt not in EXPORTERS:
        raise LabelsError(f"Unknown export format {fmt!r}. Use one of {', '.join(FORMATS)}.")
    return EXPORTERS[fmt](store, path, filters)


def import_jsonl(store: Store, path: str | Path) -> ImportResult:
    """Import a JSONL export: all of it in one transaction, or nothing with the line at fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ImportFailed(f"No file at {path}.") from None
    except UnicodeDecodeError:
        raise ImportFailed(f"{path} is not UTF-8 text; import a Guard Lab JSONL export.") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(_parse_record(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
                GuardError, LabelsError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ImportFailed(f"{path.name} line {number}: {detail}. Nothing was imported.") from None
    try:
        return store.import_examples(items)
    except LabelsError as exc:
        raise ImportFailed(f"{path.name}: {exc} Nothing was imported.") from None


def _parse_record(record: dict[str, Any]) -> tuple[Any, list[LabelInput]]:
    blobs = [blob_from_png(base64.b64decode(image["png_base64"], validate=True), image["sha256"])
             for image in record["images"]]
    messages = [
        {"role": m["role"], "content": [
            {k: v for k, v in part.items() if v is not None} for part in m["content"]]}
        for m in record["messages"]]
    conversation = from_messages(messages, images={b.sha256: b.png for b in blobs})
    output = ModelOutput(
        model=record["model"], raw_output=record["raw_output"], unsafe=bool(record["model_unsafe"]),
        p_unsafe=record["p_unsafe"], threshold=record["threshold"],
        categories=tuple(record["model_categories"]), model_label=record["model_label"],
        revision=record["model_revision"], prompt_guard_model=record["prompt_guard_model"],
        prompt_guard_revision=record["prompt_guard_revision"],
        prompt_guard_scores={s["label"]: s["score"] for s in record["prompt_guard_scores"]})
    example = ExampleInput(
        conversation=conversation, family=record["family"], output=output,
        excluded=tuple(record["excluded_categories"]),
        custom=tuple(CustomCategory(c["name"], c.get("description") or "")
                     for c in record["custom_categories"]),
        prompt=record["prompt"])
    labels = [LabelInput(label["reviewer"], label["label"], tuple(label["categories"]),
                         label.get("note") or "") for label in record["labels"]]
    return prepare_example(example, blobs), labels
