"""The database schema, changed only through these migrations (recorded in _sqlite_migrations).

Never edit an applied migration: add a new one below it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlite_utils import Database, Migrations

from labels.content import conversation_text

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


@migrations()
def m004_review_queues(db: Database) -> None:
    """Review queues (labels/queues.py): items to label, who holds them, who labelled them.

    `done` counts an item's labelled outcomes and `closed_at` is set once it reaches the queue's
    overlap; the partial index on open items and the per-reviewer cursor keep "next item for
    reviewer R" a short index walk however many items are queued or already labelled. The
    counts on queues and queue_reviewers change in the transaction that records each outcome,
    so progress is read, not counted, on a queue of 100,000 items.
    """
    db["queues"].create({
        "id": int, "name": str, "overlap": int, "created_at": str,
        "source": str,  # JSON: how the queue was filled
        "family": str, "model": str, "excluded": str, "custom_categories": str,  # JSON lists
        "items": int, "complete": int,  # complete: items with all their labels
        "labels": int, "skips": int,  # outcomes standing, all reviewers
    }, pk="id", not_null={"name", "overlap", "created_at", "source", "family", "model",
                          "excluded", "custom_categories", "items", "complete", "labels",
                          "skips"},
        defaults={"overlap": 1, "items": 0, "complete": 0, "labels": 0, "skips": 0})
    db["queues"].create_index(["name"], unique=True)
    db["queue_items"].create({
        "id": int, "queue_id": int, "position": int,
        "conversation": str,  # the store's format: canonical JSON, Hugging Face chat messages
        "content_hash": str,  # labels.content.content_hash: the example a label will go to
        "model": str, "verdict": str,  # "safe" / "unsafe"; NULL when failed or not judged
        "categories": str, "p_unsafe": float, "threshold": float, "raw_output": str,
        "error": str, "run_id": int, "row_id": str,
        "source": str,  # JSON: run and row, or import file and line
        "done": int, "closed_at": str, "created_at": str,
    }, pk="id", foreign_keys=[("queue_id", "queues", "id")],  # no key to eval_runs: a run
        # may be deleted and run again while its queue (which holds its answers) lives on
        not_null={"queue_id", "position", "conversation", "content_hash", "model", "categories",
                  "threshold", "source", "done", "created_at"}, defaults={"done": 0})
    db["queue_items"].create_index(["queue_id", "position"], unique=True)
    db.execute("CREATE INDEX idx_queue_items_open ON queue_items (queue_id, position) "
               "WHERE closed_at IS NULL")
    db["queue_items"].create_index(["content_hash"])
    db["queue_outcomes"].create({
        "item_id": int, "reviewer": str, "queue_id": int, "status": str,  # labelled / skipped
        "example_id": int, "label_id": int, "at": str,
    }, pk=("item_id", "reviewer"),
        foreign_keys=[("item_id", "queue_items", "id"), ("queue_id", "queues", "id"),
                      ("example_id", "examples", "id"), ("label_id", "labels", "id")],
        not_null={"queue_id", "status", "at"})
    db["queue_outcomes"].create_index(["queue_id", "reviewer", "status"])
    db["queue_leases"].create({
        "item_id": int, "reviewer": str, "queue_id": int, "expires_at": str,
    }, pk=("item_id", "reviewer"), foreign_keys=[("item_id", "queue_items", "id"),
                                                 ("queue_id", "queues", "id")],
        not_null={"queue_id", "expires_at"})
    db["queue_leases"].create_index(["queue_id", "reviewer"])
    # position: every item before it is complete or done by this reviewer (where to look next).
    db["queue_reviewers"].create({
        "queue_id": int, "reviewer": str, "position": int, "labelled": int, "skipped": int,
    }, pk=("queue_id", "reviewer"), foreign_keys=[("queue_id", "queues", "id")],
        not_null={"position", "labelled", "skipped"},
        defaults={"position": 0, "labelled": 0, "skipped": 0})


@migrations()
def m005_final_labels(db: Database) -> None:
    """One final label per example (labels/final.py), the disagreements a lead settles, and
    what an example and a label record beyond m001: whether the model judged it at all, where
    the example came from, and an unsafe label that says no category fits.

    Existing databases are settled as they stand: an example whose active labels reach the
    overlap of its queue (1 outside queues) and agree gets that label as final; one whose labels
    disagree opens a disagreement.
    """
    from labels.final import settle  # the same rule as every later save

    db["labels"].add_column("none_fits", int, not_null_default=0)
    db["examples"].add_column("judged", int, not_null_default=1)
    db["examples"].add_column("source", str)  # JSON: run and row, dataset and gold, queue
    # Failed or unjudged queue items were stored as "safe at p_unsafe 0" with no model_label.
    db.execute("UPDATE examples SET judged = 0 WHERE model_label = '' AND p_unsafe = 0 "
               "AND model_unsafe = 0 AND (raw_output = '' OR raw_output LIKE 'error:%')")
    db["final_labels"].create({
        "example_id": int, "label": str, "categories": str, "none_fits": int,
        "source": str,  # "agreed": the reviewers agree; "adjudicated": a lead decided
        "reviewers": str,  # JSON list: whose labels it stands on
        "decided_by": str, "reason": str, "decided_at": str,
    }, pk="example_id", foreign_keys=[("example_id", "examples", "id")],
        not_null={"label", "categories", "none_fits", "source", "reviewers", "decided_at"})
    db["disagreements"].create({
        "id": int, "example_id": int, "queue_id": int, "opened_at": str,
        "status": str,  # open / resolved (a lead decided) / settled (labels came to agree or
        # fell below the overlap)
        "closed_at": str, "resolved_by": str, "reason": str, "label": str, "categories": str,
    }, pk="id", foreign_keys=[("example_id", "examples", "id"), ("queue_id", "queues", "id")],
        not_null={"example_id", "opened_at", "status"})
    db.execute("CREATE UNIQUE INDEX idx_disagreements_open ON disagreements (example_id) "
               "WHERE status = 'open'")
    db["final_events"].create({
        "id": int, "example_id": int, "action": str, "by": str, "reason": str,
        "before": str, "after": str, "at": str,
    }, pk="id", foreign_keys=[("example_id", "examples", "id")],
        not_null={"example_id", "action", "at"})
    db["final_events"].create_index(["example_id"])
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    for (example_id,) in db.execute(
            "SELECT DISTINCT example_id FROM labels WHERE deleted_at IS NULL ORDER BY example_id"
    ).fetchall():
        settle(db, example_id, at, by="migration")


@migrations()
def m006_policies(db: Database) -> None:
    """Policies saved by name with immutable versions (labels/policies.py), and the policy
    (name@version) that decided each stored run and saved example; NULL before policies."""
    db["policies"].create({
        "id": int, "name": str, "version": int,
        "body": str,  # JSON: guard.core.policy.Policy.to_json() without the version
        "content_hash": str, "created_at": str, "created_by": str,
    }, pk="id", not_null={"name", "version", "body", "content_hash", "created_at"})
    db["policies"].create_index(["name", "version"], unique=True)
    for action in ("UPDATE", "DELETE"):  # a version, once saved, is what it was
        db.execute(f"CREATE TRIGGER policies_immutable_{action.lower()} BEFORE {action} ON "
                   "policies BEGIN SELECT RAISE(ABORT, 'policy versions are immutable: save a "
                   "new version instead'); END")
    db["eval_runs"].add_column("policy", str)
    db["examples"].add_column("policy", str)


@migrations()
def m007_prompt_guard_labels(db: Database) -> None:
    """Prompt Guard labels (labels/prompt_guard.py): per judged user message of an example, a
    reviewer's "benign" or "malicious" with the Prompt Guard model, preprocessing and score it
    was given against; one final label per message, the disagreements a lead settles and every
    change, under the rule of labels/final.py. Queue items keep Prompt Guard's stored answer."""
    db["prompt_guard_labels"].create({
        "id": int, "example_id": int, "message_index": int, "reviewer": str,
        "malicious": int, "model": str, "preprocessing": str,
        "score": float,  # NULL when Prompt Guard did not score the message
        "note": str, "created_at": str, "updated_at": str, "deleted_at": str,
    }, pk="id", foreign_keys=[("example_id", "examples", "id")],
        not_null={"example_id", "message_index", "reviewer", "malicious", "model",
                  "preprocessing", "created_at", "updated_at"})
    # One active label per reviewer and message; deleted ones stay for the record.
    db.execute("CREATE UNIQUE INDEX idx_prompt_guard_labels_active ON prompt_guard_labels "
               "(example_id, message_index, reviewer) WHERE deleted_at IS NULL")
    db["prompt_guard_final"].create({
        "example_id": int, "message_index": int, "malicious": int,
        "source": str,  # "agreed" or "adjudicated", as final_labels
        "reviewers": str,  # JSON list
        "decided_by": str, "reason": str, "decided_at": str,
        "model": str, "preprocessing": str, "score": float,  # what the labels were given against
    }, pk=("example_id", "message_index"), foreign_keys=[("example_id", "examples", "id")],
        not_null={"malicious", "source", "reviewers", "decided_at", "model", "preprocessing"})
    db["prompt_guard_disagreements"].create({
        "id": int, "example_id": int, "message_index": int, "queue_id": int, "opened_at": str,
        "status": str,  # open / resolved / settled, as disagreements
        "closed_at": str, "resolved_by": str, "reason": str, "malicious": int,
    }, pk="id", foreign_keys=[("example_id", "examples", "id"), ("queue_id", "queues", "id")],
        not_null={"example_id", "message_index", "opened_at", "status"})
    db.execute("CREATE UNIQUE INDEX idx_prompt_guard_disagreements_open ON "
               "prompt_guard_disagreements (example_id, message_index) WHERE status = 'open'")
    db["prompt_guard_events"].create({
        "id": int, "example_id": int, "message_index": int,
        "label_id": int,  # NULL for a change of the final label or a disagreement
        "action": str, "by": str, "reason": str, "before": str, "after": str, "at": str,
    }, pk="id", foreign_keys=[("example_id", "examples", "id"),
                              ("label_id", "prompt_guard_labels", "id")],
        not_null={"example_id", "message_index", "action", "at"})
    db["prompt_guard_events"].create_index(["example_id"])
    # JSON {"model", "preprocessing", "threshold", "scores": {message index: p_malicious}}; NULL
    # when the item carries no Prompt Guard answer.
    db["queue_items"].add_column("prompt_guard", str)


@migrations()
def m008_eval_attack_windows(db: Database) -> None:
    """What Prompt Guard needs of a stored run beside each row's served score (labels/runs.py):
    the row's attack label from its dataset (NULL when the dataset does not say) and the score
    of each 512-token window of its prompt (JSON list of floats; NULL when unknown). Rows stored
    before this migration keep NULL in both: their run's attack labels are read from its
    dataset again, as before."""
    db["eval_results"].add_column("attack", int)
    db["eval_results"].add_column("window_scores", str)
