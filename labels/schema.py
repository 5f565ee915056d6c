"""The database schema, changed only through these migrations (recorded in _sqlite_migrations).

Never edit an applied migration: add a new one below it.
"""

from __future__ import annotations

import json

from sqlite_utils import Database, Migrations

from .content import conversation_text

migrations = Migrations("guard_lab_labels")


@migrations()
def m001_initial(db: Database) -> None:
    db["examples"].create({
        "id": int, "created_at": str, "content_hash": str, "family": str,
        "conversation": str,  # JSON, Hugging Face chat format; image paths name images.sha256
        "excluded_categories": str, "custom_categories": str,  # JSON lists
        "prompt": str, "image_count": int,
        "model": str, "model_revision": str, "raw_output": str, "model_label": str,
        "model_unsafe": int, "model_categories": str, "p_unsafe": float, "threshold": float,
        "prompt_guard_model": str, "prompt_guard_revision": str, "prompt_guard_scores": str,
    }, pk="id", not_null={"created_at", "content_hash", "family", "conversation", "prompt",
                          "model", "model_unsafe", "p_unsafe", "threshold"})
    db["examples"].create_index(["content_hash"], unique=True)
    db["examples"].create_index(["created_at"])
    db["images"].create({"sha256": str, "png": bytes, "width": int, "height": int,
                         "size": int, "created_at": str},
                        pk="sha256", not_null={"png", "width", "height"})
    db["example_images"].create(
        {"example_id": int, "position": int, "sha256": str}, pk=("example_id", "position"),
        foreign_keys=[("example_id", "examples", "id"), ("sha256", "images", "sha256")])
    db["example_images"].create_index(["sha256"])
    db["labels"].create({
        "id": int, "example_id": int, "reviewer": str, "label": str, "categories": str,
        "note": str, "model_was_right": int, "created_at": str, "updated_at": str,
        "deleted_at": str,
    }, pk="id", foreign_keys=[("example_id", "examples", "id")],
        not_null={"example_id", "reviewer", "label", "categories", "created_at", "updated_at"})
    # One active label per reviewer and example; deleted ones stay for the record.
    db.execute("CREATE UNIQUE INDEX idx_labels_active ON labels (example_id, reviewer) "
               "WHERE deleted_at IS NULL")
    db["label_events"].create({
        "id": int, "label_id": int, "example_id": int, "action": str, "reviewer": str,
        "reason": str, "before": str, "after": str, "at": str,
    }, pk="id", foreign_keys=[("label_id", "labels", "id"), ("example_id", "examples", "id")],
        not_null={"label_id", "example_id", "action", "at"})
    db["label_events"].create_index(["label_id"])


@migrations()
def m002_search(db: Database) -> None:
    """Full-text search over conversation text and reviewer notes."""
    db["examples"].add_column("conversation_text", str)
    for row in db.query("SELECT id, conversation FROM examples"):
        db.execute("UPDATE examples SET conversation_text = ? WHERE id = ?",
                   [conversation_text(json.loads(row["conversation"])), row["id"]])
    db["examples"].enable_fts(["conversation_text"], create_triggers=True)
    db["labels"].enable_fts(["note"], create_triggers=True)


@migrations()
def m003_eval_runs(db: Database) -> None:
    """Batch evaluation runs (labels/runs.py): one row per run, one per judged dataset row."""
    db["eval_runs"].create({
        "id": int, "name": str, "dataset": str, "dataset_sha256": str, "format": str,
        "model": str, "prompt_guard_model": str, "excluded": str,  # JSON list
        "threshold": float, "created_at": str, "finished_at": str, "status": str,
        "total_rows": int,
    }, pk="id", not_null={"name", "dataset", "dataset_sha256", "format", "model", "excluded",
                          "threshold", "created_at", "status"})
    db["eval_runs"].create_index(["name"], unique=True)
    db["eval_results"].create({
        "run_id": int, "row_id": str, "position": int, "gold": int,
        "gold_categories": str,  # JSON list
        "verdict": str, "p_unsafe": float, "categories": str,  # JSON list
        "raw_output": str, "p_malicious": float, "error": str, "created_at": str,
    }, foreign_keys=[("run_id", "eval_runs", "id")], not_null={"run_id", "row_id", "created_at"})
    db["eval_results"].create_index(["run_id", "row_id"], unique=True)
