"""The label store: the only code that reads or writes the Guard Lab database.

Plain tables with JSON in text columns, readable with the sqlite-utils CLI and Datasette.
Every save is one transaction; the connection is shared by threads behind a lock, and other
processes wait for the write lock (WAL mode, busy timeout, BEGIN IMMEDIATE).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from guard.core.categories import categories_for
from guard.core.conversation import from_messages
from guard.core.errors import GuardError
from labels.agreement import Agreement, ReviewerLabel, agreement
from labels.content import PreparedExample, allowed_codes, check_label, code_key, prepare_example
from labels.errors import InvalidLabel, LabelsError, NotFound
from labels.filters import where_clause
from labels.final import FINAL, REVIEWER, LabelChoice, final_from_row, reopen_queue_items, settle
from labels.prompt_guard import PromptGuardInput
from labels.prompt_guard import put_labels as put_prompt_guard_labels
from labels.records import (
    UNSAFE,
    ExampleFilter,
    ExampleInput,
    ExampleSummary,
    ImageBlob,
    ImportResult,
    LabelEvent,
    LabelInput,
    MetricInputs,
    ModelOutput,
    SavedExample,
    StoredExample,
    StoredLabel,
)
from labels.schema import migrations

MAX_PAGE = 1000
log = logging.getLogger(__name__)


class DatabaseFault(LabelsError):
    """The database file cannot be used (gone, replaced, full, read-only): nothing was saved."""


class CorruptDatabase(DatabaseFault):
    """The database file is not a readable SQLite database; `problem` says what SQLite found."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        name = path.name
        super().__init__(
            f"The labels database {path} is damaged: {problem}. To restore it, stop the app, "
            f"move {name} (with any {name}-wal and {name}-shm beside it) out of its folder, and "
            "start again: with backups on (GUARD_LAB_BACKUP_REPO, labels/backup.py) the last "
            f"good snapshot is restored into its place; without them, `sqlite3 {name} .recover "
            "| sqlite3 recovered.db` saves what it can. Or start with --no-labels.")


BUCKET_DIR = "/data"  # where a Space mounts a Storage Bucket volume (README, On a Space)


def default_db_path(environ: Mapping[str, str] = os.environ,
                    persistent_dir: str | Path = BUCKET_DIR) -> Path:
    """$GUARD_LAB_DB, else /data/guard_lab.db where a volume (a Space's Storage Bucket) is
    mounted there and writable, else ./data/guard_lab.db."""
    if environ.get("GUARD_LAB_DB"):
        return Path(environ["GUARD_LAB_DB"])
    if on_writable_volume(persistent_dir):
        return Path(persistent_dir) / "guard_lab.db"
    return Path("data") / "guard_lab.db"


def on_writable_volume(folder: str | Path) -> bool:
    """`folder` exists, is a folder and this process may create files in it."""
    folder = Path(folder)
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Store:
    """Examples, their images and reviewers' labels in one SQLite file."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        """Open (or create) the database; DatabaseFault (CorruptDatabase for a damaged file)
        says why it cannot be used."""
        self.path = Path(path)
        self._lock = threading.RLock()
        self._identity: tuple[int, int] | None = None  # the file opened, checked before writes
        self._opening = True  # faults are told as "cannot be opened", not "nothing was saved"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise _fault(exc, self.path, opening=True) from None
        self.db = Database(conn)
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.enable_wal()
            # In WAL mode NORMAL loses no committed transaction when a process dies, only on
            # power loss.
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._identity = _identity(self.path)
            with self._write():
                migrations.apply(self.db)
        except sqlite3.Error as exc:
            conn.close()
            raise _fault(exc, self.path, opening=True) from None
        except BaseException:
            conn.close()
            raise
        self._opening = False

    def check_integrity(self) -> None:
        """SQLite's quick check of every page (the app runs it at start-up): CorruptDatabase
        when the file is damaged beyond its header."""
        try:
            with self._lock:
                problems = [r[0] for r in self.db.execute("PRAGMA quick_check(3)")]
        except sqlite3.Error as exc:
            raise _fault(exc, self.path) from None
        if problems != ["ok"]:
            raise CorruptDatabase(self.path, "; ".join(problems))

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Database]:
        # IMMEDIATE takes the write lock up front, so a second process waits for it instead of
        # failing with SQLITE_BUSY halfway through a deferred transaction.
        with self._lock:
            self._check_file()
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _fault(exc, self.path, opening=self._opening) from None
            try:
                yield self.db
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _fault(exc, self.path, opening=self._opening) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # SQLite rolls back by itself after some errors (a full disk, an I/O error).
        if self.db.conn.in_transaction:
            self.db.rollback()

    def _check_file(self) -> None:
        """Refuse to write unless the path still names the file this store opened: a write to
        a deleted or replaced file would succeed and be lost at the next start."""
        if self._identity is None:
            return
        try:
            now_there = _identity(self.path)
        except FileNotFoundError:
            now_there = None
        if now_there == self._identity:
            return
        what = "deleted or moved" if now_there is None else "replaced by another file"
        log.error("The labels database %s was %s while the app was running; refusing writes "
                  "until the app is restarted.", self.path, what)
        raise DatabaseFault(
            f"The labels database {self.path.name} was {what} while the app was running, so "
            "nothing was saved (a save now would be lost). Restart the app to open what is "
            "there now (a missing file is restored from the backup, when backups are on).")

    # Writing

    def save_example(self, example: ExampleInput, label: LabelInput,
                     prompt_guard: Sequence[PromptGuardInput] = ()) -> SavedExample:
        """Store an example (once per content) with a reviewer's label and their Prompt Guard
        labels of its user messages (labels/prompt_guard.py), in one transaction."""
        prepared = prepare_example(example)
        label = check_label(label, prepared.allowed)
        with self._write():
            example_id, new = self._insert_example(prepared)
            label_id, action = self._put_label(example_id, label, bool(prepared.row["model_unsafe"]))
            if prompt_guard:
                put_prompt_guard_labels(self.db, example_id, label.reviewer, prompt_guard, now())
        return SavedExample(example_id, label_id, new, action)

    def add_label(self, example_id: int, label: LabelInput) -> StoredLabel:
        """Add a reviewer's label; a second one from the same reviewer edits theirs."""
        with self._lock:
            allowed, model_unsafe = self._policy(example_id)
            label = check_label(label, allowed)
            with self._write():
                label_id, _ = self._put_label(example_id, label, model_unsafe)
            return self.get_label(label_id)

    def edit_label(self, label_id: int, label: LabelInput, reason: str = "") -> StoredLabel:
        with self._lock:
            current = self.get_label(label_id)
            if label.reviewer.strip() != current.reviewer:
                raise InvalidLabel(
                    f"Label {label_id} belongs to {current.reviewer}; save your own label instead.")
            allowed, model_unsafe = self._policy(current.example_id)
            label = check_label(label, allowed)
            with self._write():
                self._put_label(current.example_id, label, model_unsafe, reason=reason)
            return self.get_label(label_id)

    def delete_label(self, label_id: int, reviewer: str, reason: str, *,
                     lead: bool = False) -> None:
        """Soft delete: the label leaves every view but stays, with who deleted it and why.

        Only its author, or a lead (`lead`: the caller checked the role), deletes a label. A
        label given through a queue reopens its item, and the example's final label is settled
        again."""
        if not reviewer.strip():
            raise InvalidLabel("Say who deletes the label (reviewer).")
        if not reason.strip():
            raise InvalidLabel("Say why the label is deleted (reason); deletions are recorded.")
        with self._lock:
            current = self.get_label(label_id)
            if reviewer.strip() != current.reviewer and not lead:
                raise InvalidLabel(f"Label {label_id} is {current.reviewer}'s: only its author "
                                   "or a lead deletes it. Save your own label instead.")
            at = now()
            with self._write():
                self.db.execute("UPDATE labels SET deleted_at = ? WHERE id = ?", [at, label_id])
                self._event(label_id, current.example_id, "delete", reviewer.strip(), reason,
                            _label_json(current), None, at)
                reopen_queue_items(self.db, label_id)
                settle(self.db, current.example_id, at, by=reviewer.strip())

    def import_examples(self, items: Sequence[tuple[PreparedExample, Sequence[LabelInput]]]
                        ) -> ImportResult:
        """Write prepared examples and their labels in one transaction, skipping what exists.

        An example already stored (same content hash) is skipped; a label is skipped when its
        reviewer already has an active label on that example. Importing twice adds nothing.
        """
        checked = [(p, [check_label(label, p.allowed) for label in labels]) for p, labels in items]
        counts = {"examples_added": 0, "examples_skipped": 0, "labels_added": 0,
                  "labels_skipped": 0}
        with self._write():
            for prepared, labels in checked:
                example_id, new = self._insert_example(prepared)
                counts["examples_added" if new else "examples_skipped"] += 1
                for label in labels:
                    if self._active_label(example_id, label.reviewer) is not None:
                        counts["labels_skipped"] += 1
                        continue
                    self._put_label(example_id, label, bool(prepared.row["model_unsafe"]),
                                    reason="import")
                    counts["labels_added"] += 1
        return ImportResult(**counts)

    def _insert_example(self, prepared: PreparedExample) -> tuple[int, bool]:
        existing = self.db.execute("SELECT id FROM examples WHERE content_hash = ?",
                                   [prepared.content_hash]).fetchone()
        if existing:
            return existing[0], False
        created = now()
        self.db["images"].insert_all(
            ({"sha256": b.sha256, "png": b.png, "width": b.width, "height": b.height,
              "size": len(b.png), "created_at": created} for b in prepared.blobs),
            ignore=True)
        example_id = self.db["examples"].insert({"created_at": created, **prepared.row}).last_pk
        self.db["example_images"].insert_all(
            {"example_id": example_id, "position": i, "sha256": b.sha256}
            for i, b in enumerate(prepared.blobs))
        return int(example_id), True

    def _active_label(self, example_id: int, reviewer: str) -> dict[str, Any] | None:
        rows = list(self.db.query(
            "SELECT * FROM labels WHERE example_id = ? AND reviewer = ? AND deleted_at IS NULL",
            [example_id, reviewer]))
        return rows[0] if rows else None

    def _put_label(self, example_id: int, label: LabelInput, model_unsafe: bool,
                   reason: str = "", *, settle_now: bool = True) -> tuple[int, str]:
        """Write a reviewer's label; `settle_now` False leaves settling the final label to the
        caller (a queue settles once its outcome is recorded)."""
        at = now()
        judged = self.db.execute("SELECT judged FROM examples WHERE id = ?",
                                 [example_id]).fetchone()[0]
        values = {"label": label.label, "categories": json.dumps(list(label.categories)),
                  "note": label.note, "none_fits": int(label.none_fits),
                  # NULL when the model gave no answer: nothing to be right or wrong about
                  "model_was_right": int((label.label == UNSAFE) == model_unsafe) if judged
                  else None}
        current = self._active_label(example_id, label.reviewer)
        if current is None:
            label_id = self.db["labels"].insert({
                "example_id": example_id, "reviewer": label.reviewer, **values,
                "created_at": at, "updated_at": at, "deleted_at": None}).last_pk
            self._event(int(label_id), example_id, "create", label.reviewer, reason, None,
                        _label_json(self._label_row(int(label_id))), at)
            if settle_now:
                settle(self.db, example_id, at, by=label.reviewer)
            return int(label_id), "create"
        if all(current[key] == value for key, value in values.items()):
            return current["id"], "unchanged"
        self.db["labels"].update(current["id"], {**values, "updated_at": at})
        self._event(current["id"], example_id, "edit", label.reviewer, reason,
                    _label_json(_stored_label(current)),
                    _label_json(self._label_row(current["id"])), at)
        if settle_now:
            settle(self.db, example_id, at, by=label.reviewer)
        return current["id"], "edit"

    def _event(self, label_id: int, example_id: int, action: str, reviewer: str, reason: str,
               before: dict[str, Any] | None, after: dict[str, Any] | None, at: str) -> None:
        self.db["label_events"].insert({
            "label_id": label_id, "example_id": example_id, "action": action,
            "reviewer": reviewer, "reason": reason,
            "before": None if before is None else json.dumps(before),
            "after": None if after is None else json.dumps(after), "at": at})

    def _policy(self, example_id: int) -> tuple[tuple[str, ...], bool]:
        row = self._example_row(example_id)
        allowed = allowed_codes(row["family"], json.loads(row["excluded_categories"]),
                                json.loads(row["custom_categories"]), row["image_count"] > 0)
        return allowed, bool(row["model_unsafe"])

    # Reading

    def _example_row(self, example_id: int) -> dict[str, Any]:
        rows = list(self.db.query("SELECT * FROM examples WHERE id = ?", [example_id]))
        if not rows:
            raise NotFound(f"No example {example_id}. Pick one from the list.")
        return rows[0]

    def _label_row(self, label_id: int) -> StoredLabel:
        rows = list(self.db.query("SELECT * FROM labels WHERE id = ?", [label_id]))
        if not rows:
            raise NotFound(f"No label {label_id}.")
        return _stored_label(rows[0])

    def get_label(self, label_id: int) -> StoredLabel:
        """An active label; a deleted one is NotFound."""
        with self._lock:
            rows = list(self.db.query(
                "SELECT * FROM labels WHERE id = ? AND deleted_at IS NULL", [label_id]))
        if not rows:
            raise NotFound(f"No label {label_id} (it may have been deleted).")
        return _stored_label(rows[0])

    def get_example(self, example_id: int) -> StoredExample:
        with self._lock:
            row = self._example_row(example_id)
            blobs = tuple(
                ImageBlob(r["sha256"], r["png"], r["width"], r["height"])
                for r in self.db.query(
                    "SELECT i.* FROM example_images e JOIN images i ON i.sha256 = e.sha256 "
                    "WHERE e.example_id = ? ORDER BY e.position", [example_id]))
            labels = tuple(_stored_label(r) for r in self.db.query(
                "SELECT * FROM labels WHERE example_id = ? AND deleted_at IS NULL "
                "ORDER BY reviewer", [example_id]))
            final = [final_from_row(r) for r in self.db.query(
                "SELECT * FROM final_labels WHERE example_id = ?", [example_id])]
        messages = json.loads(row["conversation"])
        try:
            conversation = from_messages(messages, images={b.sha256: b.png for b in blobs})
        except GuardError as exc:
            raise LabelsError(f"Example {example_id} cannot be rebuilt: {exc}") from None
        return StoredExample(
            id=row["id"], created_at=row["created_at"], content_hash=row["content_hash"],
            family=row["family"], conversation=conversation, messages=messages, images=blobs,
            excluded=tuple(json.loads(row["excluded_categories"])),
            custom=tuple(json.loads(row["custom_categories"])), prompt=row["prompt"],
            output=_model_output(row), labels=labels, final=final[0] if final else None,
            source=json.loads(row["source"] or "{}"))

    def iter_examples(self) -> Iterator[StoredExample]:
        """Every example, oldest first (exports)."""
        with self._lock:
            ids = [r[0] for r in self.db.execute("SELECT id FROM examples ORDER BY id")]
        for example_id in ids:
            yield self.get_example(example_id)

    def label_history(self, example_id: int) -> tuple[LabelEvent, ...]:
        with self._lock:
            rows = list(self.db.query(
                "SELECT * FROM label_events WHERE example_id = ? ORDER BY id", [example_id]))
        return tuple(
            LabelEvent(id=r["id"], label_id=r["label_id"], example_id=r["example_id"],
                       action=r["action"], reviewer=r["reviewer"] or "", reason=r["reason"] or "",
                       before=None if r["before"] is None else json.loads(r["before"]),
                       after=None if r["after"] is None else json.loads(r["after"]), at=r["at"])
            for r in rows)

    def list_examples(self, filters: ExampleFilter | None = None) -> list[ExampleSummary]:
        """Newest first, filtered and paged."""
        filters = filters or ExampleFilter()
        if not 1 <= filters.limit <= MAX_PAGE or filters.offset < 0:
            raise LabelsError(f"limit must be 1 to {MAX_PAGE} and offset 0 or more.")
        where, params = where_clause(filters, self.db.quote_fts)
        sql = f"""
            SELECT e.id, e.created_at, e.family, e.model, e.image_count, e.model_unsafe,
                   e.p_unsafe, e.model_categories, substr(e.conversation_text, 1, 200) AS preview,
                   (SELECT json_group_array(json_array(reviewer, label, model_was_right))
                    FROM (SELECT reviewer, label, model_was_right FROM labels
                          WHERE example_id = e.id AND deleted_at IS NULL ORDER BY reviewer)
                   ) AS active
            FROM examples e {where}
            ORDER BY e.created_at DESC, e.id DESC LIMIT :limit OFFSET :offset"""
        with self._lock:
            rows = list(self.db.query(
                sql, {**params, "limit": filters.limit, "offset": filters.offset}))
        summaries = []
        for r in rows:
            active = json.loads(r["active"])
            summaries.append(ExampleSummary(
                id=r["id"], created_at=r["created_at"], family=r["family"], model=r["model"],
                preview=r["preview"] or "", image_count=r["image_count"],
                model_unsafe=bool(r["model_unsafe"]), p_unsafe=r["p_unsafe"],
                model_categories=tuple(json.loads(r["model_categories"])),
                gold_labels=tuple(a[1] for a in active), reviewers=tuple(a[0] for a in active),
                disagreement=any(not a[2] for a in active)))
        return summaries

    def count_examples(self, filters: ExampleFilter | None = None) -> int:
        where, params = where_clause(filters or ExampleFilter(), self.db.quote_fts)
        with self._lock:
            return self.db.execute(f"SELECT count(*) FROM examples e {where}", params).fetchone()[0]

    def agreement(self, exclude: Iterable[int] = ()) -> Agreement:
        """Between reviewers, over every active label but those of the `exclude` examples."""
        left_out = set(exclude)
        with self._lock:
            rows = list(self.db.query(
                "SELECT example_id, reviewer, label, categories FROM labels "
                "WHERE deleted_at IS NULL"))
        return agreement(ReviewerLabel(r["example_id"], r["reviewer"], r["label"] == UNSAFE,
                                       frozenset(json.loads(r["categories"]))) for r in rows
                         if r["example_id"] not in left_out)

    def metric_inputs(self, *, reviewer: str | None = None, model: str | None = None,
                      labels: LabelChoice | str = FINAL) -> MetricInputs:
        """One row per final label (`labels`: or per active label, or one reviewer's; a
        `reviewer` given means that reviewer's). Predicted categories count only when the
        verdict was unsafe. Examples the model never judged are left out."""
        choice = LabelChoice.parse(labels)
        if choice.kind == REVIEWER and reviewer is None:
            reviewer = choice.reviewer
        table = "final_labels" if choice.kind == FINAL and reviewer is None else "labels"
        sql = ("SELECT l.label, l.categories, e.model_unsafe, e.model_categories, e.p_unsafe, "
               f"e.family FROM {table} l JOIN examples e ON e.id = l.example_id WHERE e.judged")
        if table == "labels":
            sql += " AND l.deleted_at IS NULL"
        params: dict[str, Any] = {}
        if reviewer is not None:
            sql += " AND l.reviewer = :reviewer"
            params["reviewer"] = reviewer
        if model is not None:
            sql += " AND e.model = :model"
            params["model"] = model
        with self._lock:
            rows = self.db.execute(
                sql + (" ORDER BY l.id" if table == "labels" else " ORDER BY l.example_id"),
                params).fetchall()
        gold = tuple(_code_set(r[1]) for r in rows)
        pred = tuple(_code_set(r[3]) if r[2] else frozenset() for r in rows)
        families = {r[5] for r in rows}
        table_order = [c.code for f in sorted(families) for c in categories_for(f)]
        seen = set().union(*gold, *pred) if rows else set()
        codes = tuple(sorted(seen | set(table_order), key=code_key))
        return MetricInputs(
            y_true=tuple(r[0] == UNSAFE for r in rows), y_pred=tuple(bool(r[2]) for r in rows),
            scores=tuple(float(r[4]) for r in rows), gold_categories=gold, pred_categories=pred,
            codes=codes)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# SQLite's primary result codes (the low byte of an extended code) that mean the file, not the
# statement: https://sqlite.org/rescode.html
_READONLY, _IOERR, _CORRUPT, _CANTOPEN, _FULL, _NOTADB = 8, 10, 11, 14, 13, 26
_READONLY_DBMOVED = _READONLY | (4 << 8)


def _fault(exc: BaseException, path: Path, *, opening: bool = False) -> Exception:
    """The refusal a person can act on for an error of the database file, or `exc` itself
    (a bug, or a busy database) when it is not one. `opening`: at start, not on a save."""
    name = path.name
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, OSError):
        what, fix = f"cannot be opened ({exc.strerror or exc})", \
            "Check that its folder exists and the app may write there."
    elif code is None:
        return exc
    elif code == _READONLY_DBMOVED:
        what, fix = "was deleted or moved while the app was running", "Restart the app."
    elif code & 0xFF in (_CORRUPT, _NOTADB):
        return CorruptDatabase(path, str(exc))
    elif code & 0xFF == _FULL:
        what, fix = "is on a full disk", ("Free some space on the server, then try again "
                                          "(what was saved before is safe).")
    elif code & 0xFF == _READONLY:
        what, fix = "is read-only on this server", ("Make the file and its folder writable "
                                                    "for the app, then try again.")
    elif code & 0xFF in (_IOERR, _CANTOPEN):
        what, fix = f"could not be read or written ({exc})", ("Check the disk and the file, "
                                                              "then try again.")
    else:
        return exc
    if opening:
        return DatabaseFault(f"The labels database {name} {what}. {fix}")
    return DatabaseFault(f"The labels database {name} {what}, so nothing was saved. {fix}")


@functools.lru_cache(maxsize=4096)
def _code_set(text: str) -> frozenset[str]:
    # Few distinct category lists recur across many labels: parse each once.
    return frozenset(json.loads(text))


def _stored_label(row: Mapping[str, Any]) -> StoredLabel:
    return StoredLabel(
        id=row["id"], example_id=row["example_id"], reviewer=row["reviewer"], label=row["label"],
        categories=tuple(json.loads(row["categories"])), note=row["note"] or "",
        model_was_right=bool(row["model_was_right"]), created_at=row["created_at"],
        updated_at=row["updated_at"], none_fits=bool(row["none_fits"]))


def _label_json(label: StoredLabel) -> dict[str, Any]:
    return {"label": label.label, "categories": list(label.categories), "note": label.note,
            "model_was_right": label.model_was_right, "none_fits": label.none_fits}


def _model_output(row: Mapping[str, Any]) -> ModelOutput:
    return ModelOutput(
        model=row["model"], raw_output=row["raw_output"] or "", unsafe=bool(row["model_unsafe"]),
        p_unsafe=row["p_unsafe"], threshold=row["threshold"],
        categories=tuple(json.loads(row["model_categories"] or "[]")),
        model_label=row["model_label"] or "", revision=row["model_revision"] or "",
        prompt_guard_model=row["prompt_guard_model"] or "",
        prompt_guard_revision=row["prompt_guard_revision"] or "",
        prompt_guard_scores=json.loads(row["prompt_guard_scores"] or "{}"),
        judged=bool(row["judged"]), policy=row.get("policy") or "")
