"""Exports that `datasets.load_dataset` reads as they are, the fine-tuning format, and import.

JSONL carries images inline (base64 PNG, named by SHA-256) so one file is a whole export and
can be imported into another database. Parquet uses the datasets Image layout
(struct {bytes, path}) with the feature recorded in the schema metadata, so images decode.

Every format trains towards one answer per example: `labels` picks it (labels/final.py's
`LabelChoice`: the final label by default, the label all reviewers agree on, or one reviewer's),
and examples whose prompt (with its images) another selected example shares with a different
answer get none. JSONL and Parquet carry it as `label` beside the reviewers' labels, the final
label and the example's provenance (`source`: run and row, dataset and its gold label, queue);
the llama-guard file writes one target per prompt and leaves out examples without an answer;
the prompt-guard file writes one {"text", "label"} row per user message with a Prompt Guard
label (labels/prompt_guard.py), 1 for malicious. JSONL also carries each example's Prompt
Guard labels and final labels (`prompt_guard_labels`, `prompt_guard_final`); import reads
neither back.
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
from labels import prompt_guard as pg
from labels.content import blob_from_png, prepare_example
from labels.errors import ImportFailed, LabelsError
from labels.final import FINAL, Answer, LabelChoice, answers, target
from labels.prompt_guard import prompt_guard_rows
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

FORMATS = ("jsonl", "parquet", "llama-guard", "prompt-guard")


def example_record(example: StoredExample, answer: Answer | None = None) -> dict[str, Any]:
    """The columns every export shares; images are added per format. `answer` is the one the
    export trains towards (None: this example has none under the export's choice)."""
    output = example.output
    judged = output.judged
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
        "model_judged": judged, "model_unsafe": output.unsafe if judged else None,
        "model_categories": list(output.categories),
        "p_unsafe": output.p_unsafe if judged else None, "threshold": output.threshold,
        "prompt_guard_model": output.prompt_guard_model,
        "prompt_guard_revision": output.prompt_guard_revision,
        "prompt_guard_scores": [{"label": k, "score": float(v)}
                                for k, v in sorted(output.prompt_guard_scores.items())],
        "labels": [{"reviewer": label.reviewer, "label": label.label,
                    "categories": list(label.categories), "note": label.note,
                    "model_was_right": label.model_was_right if judged else None,
                    "none_fits": label.none_fits, "created_at": label.created_at,
                    "updated_at": label.updated_at} for label in example.labels],
        "reviewers": [label.reviewer for label in example.labels],
        "final_label": None if example.final is None else {
            "label": example.final.label, "categories": list(example.final.categories),
            "none_fits": example.final.none_fits, "source": example.final.source,
            "decided_by": example.final.decided_by, "reason": example.final.reason,
            "decided_at": example.final.decided_at},
        "label": None if answer is None else answer.to_json(),
        "source": dict(example.source),
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
    for example_id in selected_ids(store, filters):
        yield store.get_example(example_id)


def selected_ids(store: Store, filters: ExampleFilter | None = None) -> list[int]:
    """The ids of `selected_examples`, oldest first."""
    if filters is None:
        with store._lock:
            return [r[0] for r in store.db.execute("SELECT id FROM examples ORDER BY id")]
    ids: set[int] = set()
    offset = 0
    while True:
        page = store.list_examples(replace(filters, limit=MAX_PAGE, offset=offset))
        ids.update(s.id for s in page)
        if len(page) < MAX_PAGE:
            break
        offset += MAX_PAGE
    return sorted(ids)


def training_answers(store: Store, ids: list[int], labels: LabelChoice | str = FINAL
                     ) -> dict[int, Answer]:
    """One answer per example under `labels`, leaving out every example whose prompt and
    images another of `ids` shares with a different answer (the same conversation judged by
    two models, say): no export trains towards two answers for one input."""
    found = answers(store, labels, ids)
    keys: dict[int, tuple[str, str]] = {}
    with store._lock:
        for example_id, prompt, shas in store.db.execute(
                "SELECT e.id, e.prompt, (SELECT group_concat(sha256, ',') FROM (SELECT sha256 "
                "FROM example_images WHERE example_id = e.id ORDER BY position)) FROM examples e"):
            if example_id in found:
                keys[example_id] = (prompt, shas or "")
    seen: dict[tuple[str, str], set[Answer]] = {}
    for example_id, key in keys.items():
        seen.setdefault(key, set()).add(found[example_id])
    return {i: a for i, a in found.items() if len(seen[keys[i]]) == 1}


def export_jsonl(store: Store, path: str | Path, filters: ExampleFilter | None = None, *,
                 labels: LabelChoice | str = FINAL) -> int:
    """One example per line, images as base64 PNG. Returns the number of examples."""
    count = 0
    ids = selected_ids(store, filters)
    chosen = training_answers(store, ids, labels)
    with _replace_atomically(Path(path), "w") as handle:
        for example_id in ids:
            example = store.get_example(example_id)
            record = example_record(example, chosen.get(example_id))
            record["images"] = [
                {"sha256": b.sha256, "width": b.width, "height": b.height,
                 "png_base64": base64.b64encode(b.png).decode("ascii")}
                for b in example.images]
            # Prompt Guard's own labels, per user message (written, not read back by import).
            record["prompt_guard_labels"] = [x.to_json() for x in pg.labels_of(store, example_id)]
            record["prompt_guard_final"] = [f.to_json()
                                            for f in pg.finals_of(store, example_id).values()]
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
    ("model_label", _STR), ("model_judged", pa.bool_()), ("model_unsafe", pa.bool_()),
    ("model_categories", pa.list_(_STR)),
    ("p_unsafe", pa.float64()), ("threshold", pa.float64()), ("prompt_guard_model", _STR),
    ("prompt_guard_revision", _STR),
    ("prompt_guard_scores", pa.list_(pa.struct([("label", _STR), ("score", pa.float64())]))),
    ("labels", pa.list_(pa.struct([
        ("reviewer", _STR), ("label", _STR), ("categories", pa.list_(_STR)), ("note", _STR),
        ("model_was_right", pa.bool_()), ("none_fits", pa.bool_()), ("created_at", _STR),
        ("updated_at", _STR)]))),
    ("reviewers", pa.list_(_STR)),
    ("final_label", pa.struct([
        ("label", _STR), ("categories", pa.list_(_STR)), ("none_fits", pa.bool_()),
        ("source", _STR), ("decided_by", _STR), ("reason", _STR), ("decided_at", _STR)])),
    ("label", pa.struct([("label", _STR), ("categories", pa.list_(_STR)),
                         ("none_fits", pa.bool_())])),
    ("source", _STR),  # JSON: provenance keys differ by origin (run, file, queue)
    ("image_sha256", pa.list_(_STR)),
    ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", _STR)]))),
], metadata={"huggingface": json.dumps({"info": {"features": {"images": [{"_type": "Image"}]}}})})


def export_parquet(store: Store, path: str | Path, filters: ExampleFilter | None = None, *,
                   batch_size: int = 256, labels: LabelChoice | str = FINAL) -> int:
    """Parquet with a datasets Image list column. Returns the number of examples."""
    count = 0
    ids = selected_ids(store, filters)
    chosen = training_answers(store, ids, labels)
    with _replace_atomically(Path(path), "wb") as handle:
        writer = pq.ParquetWriter(handle, PARQUET_SCHEMA)
        batch: list[dict[str, Any]] = []
        for example_id in ids:
            example = store.get_example(example_id)
            record = example_record(example, chosen.get(example_id))
            record["source"] = json.dumps(record["source"], ensure_ascii=False)
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
    return target(Answer(label, tuple(categories)))


def export_llama_guard(store: Store, path: str | Path,
                       filters: ExampleFilter | None = None, *,
                       labels: LabelChoice | str = FINAL) -> int:
    """{"prompt", "target", "example_id", "source"}: one row per prompt, the prompt exactly as
    the model saw it and the one answer `labels` gives it; examples without one are left out."""
    count = 0
    ids = selected_ids(store, filters)
    chosen = training_answers(store, ids, labels)
    written: set[str] = set()
    with _replace_atomically(Path(path), "w") as handle:
        for example_id in ids:
            if example_id not in chosen:
                continue
            example = store.get_example(example_id)
            if example.prompt in written:  # the same prompt and answer under another model
                continue
            written.add(example.prompt)
            row = {"prompt": example.prompt, "target": target(chosen[example_id]),
                   "example_id": example.id, "source": dict(example.source)}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def export_prompt_guard(store: Store, path: str | Path,
                        filters: ExampleFilter | None = None, *,
                        labels: LabelChoice | str = FINAL) -> int:
    """{"text", "label"} (1 = malicious: a jailbreak or prompt injection, 0 = benign): one row
    per user message with a Prompt Guard label under `labels` (final labels by default), for
    any text-classification trainer. A text written once; a text that two messages give
    different labels is left out (no two answers for one input)."""
    ids = selected_ids(store, filters) if filters is not None else None
    rows = prompt_guard_rows(store, labels=labels, ids=ids)
    answers_of: dict[str, set[bool]] = {}
    for row in rows:
        answers_of.setdefault(row.text, set()).add(row.malicious)
    count = 0
    with _replace_atomically(Path(path), "w") as handle:
        for row in rows:
            if len(answers_of.get(row.text, ())) != 1:
                continue
            del answers_of[row.text]
            handle.write(json.dumps({"text": row.text, "label": int(row.malicious)},
                                    ensure_ascii=False) + "\n")
            count += 1
    return count


EXPORTERS: dict[str, Callable[..., int]] = {
    "jsonl": export_jsonl, "parquet": export_parquet, "llama-guard": export_llama_guard,
    "prompt-guard": export_prompt_guard,
}


def export(store: Store, fmt: str, path: str | Path, filters: ExampleFilter | None = None, *,
           labels: LabelChoice | str = FINAL) -> int:
    """Write the examples `filters` selects (all when None) in format `fmt`, training towards
    the answers `labels` gives (final labels by default)."""
    if fmt not in EXPORTERS:
        raise LabelsError(f"Unknown export format {fmt!r}. Use one of {', '.join(FORMATS)}.")
    return EXPORTERS[fmt](store, path, filters, labels=LabelChoice.parse(labels))


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
    judged = bool(record.get("model_judged", True))
    output = ModelOutput(
        model=record["model"], raw_output=record["raw_output"],
        unsafe=bool(record["model_unsafe"]) if judged else False,
        p_unsafe=record["p_unsafe"] if judged else 0.0, threshold=record["threshold"], judged=judged,
        categories=tuple(record["model_categories"]), model_label=record["model_label"],
        revision=record["model_revision"], prompt_guard_model=record["prompt_guard_model"],
        prompt_guard_revision=record["prompt_guard_revision"],
        prompt_guard_scores={s["label"]: s["score"] for s in record["prompt_guard_scores"]})
    example = ExampleInput(
        conversation=conversation, family=record["family"], output=output,
        excluded=tuple(record["excluded_categories"]),
        custom=tuple(CustomCategory(c["name"], c.get("description") or "")
                     for c in record["custom_categories"]),
        prompt=record["prompt"], source=record.get("source") or None)
    # An export from before "none fits" existed stored unsafe with no category as it stood.
    labels = [LabelInput(label["reviewer"], label["label"], tuple(label["categories"]),
                         label.get("note") or "",
                         label.get("none_fits", label["label"] == UNSAFE and not label["categories"]))
              for label in record["labels"]]
    return prepare_example(example, blobs), labels
