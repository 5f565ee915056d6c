"""Prompt Guard labels: was a judged user message benign, or malicious (a jailbreak or a
prompt injection)?

Prompt Guard scores each user message on its own, so its labels are per message: one reviewer's
`PromptGuardLabel` of message `message_index` of a saved example, beside that reviewer's Llama
Guard label of the whole example, recorded with the Prompt Guard model, preprocessing and score
the reviewer saw (the example's stored score by default).

The rule is labels/final.py's, per message: once a message has as many active labels as the
example's queue overlap (1 outside queues) and they agree, that is its final label; when they
disagree it has none and an open disagreement, which a lead settles (`resolve`); a lead's
decision stands whatever the labels do later. Every change is a row of `prompt_guard_events`:
who, when, before and after. Reviewers work blind: a queue item never shows another's label.

What tuning and measurement read is `prompt_guard_rows` (one `PromptGuardRow` per settled user
message); `python -m labels export --format prompt-guard` writes it as {"text", "label"} rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from guard.core.errors import GuardError
from guard.core.prompt_guard_text import check_preprocessing
from labels.errors import InvalidLabel, LabelsError, NotFound
from labels.final import (
    ADJUDICATED,
    AGREED,
    ALL,
    FINAL,
    OPEN,
    RESOLVED,
    SETTLED,
    LabelChoice,
    required_reviews,
)

if TYPE_CHECKING:  # the store imports this module for `put_labels`
    from labels.store import Store

BENIGN, MALICIOUS = "benign", "malicious"
VALUES = (BENIGN, MALICIOUS)
VALUE_HELP = "benign, or malicious (a jailbreak or prompt injection)"

__all__ = ["BENIGN", "MALICIOUS", "VALUES", "JudgedMessage", "PromptGuardDisagreement",
           "PromptGuardFinal", "PromptGuardInput", "PromptGuardLabel", "PromptGuardRow",
           "delete_label", "disagreements", "finals_of", "history", "judged_messages",
           "index_of", "labels_of", "parse_value", "prompt_guard_rows", "record", "record_labels",
           "resolve"]


@dataclass(frozen=True)
class PromptGuardRow:
    """One settled user message: what Prompt Guard tuning trains on and measurement scores.
    `score` is Prompt Guard's p_malicious as stored (None when it did not score the message)."""

    example_id: int
    message_index: int  # position in the conversation, from 0 (as Prompt Guard's scores)
    text: str
    malicious: bool
    score: float | None
    model: str  # the Prompt Guard model that gave `score` ("" when none did)
    preprocessing: str  # guard.core.prompt_guard_text.PREPROCESSING

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromptGuardInput:
    """One reviewer's label of one user message. `model` and `score` left empty take the
    example's stored Prompt Guard answer for that message."""

    message_index: int
    malicious: bool
    model: str | None = None
    preprocessing: str = "none"
    score: float | None = None
    note: str = ""


@dataclass(frozen=True)
class PromptGuardLabel:
    id: int
    example_id: int
    message_index: int
    reviewer: str
    malicious: bool
    model: str
    preprocessing: str
    score: float | None
    note: str
    created_at: str
    updated_at: str

    @property
    def value(self) -> str:
        return MALICIOUS if self.malicious else BENIGN

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.value}


@dataclass(frozen=True)
class PromptGuardFinal:
    example_id: int
    message_index: int
    malicious: bool
    source: str  # "agreed" or "adjudicated"
    reviewers: tuple[str, ...]
    decided_by: str
    reason: str
    decided_at: str
    model: str
    preprocessing: str
    score: float | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "reviewers": list(self.reviewers),
                "label": MALICIOUS if self.malicious else BENIGN}


@dataclass(frozen=True)
class PromptGuardDisagreement:
    id: int
    example_id: int
    message_index: int
    queue: str | None
    opened_at: str
    status: str  # open, resolved or settled
    closed_at: str | None
    resolved_by: str | None
    reason: str
    labels: tuple[dict[str, Any], ...]  # the active labels: reviewer, label, note

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}


@dataclass(frozen=True)
class JudgedMessage:
    """A user message of a stored example that a Prompt Guard label may be about."""

    index: int
    text: str
    score: float | None  # the example's stored Prompt Guard score, if any


def parse_value(value: Any) -> bool:
    """'benign' -> False, 'malicious' -> True (also bools, 0 and 1); InvalidLabel otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in (BENIGN, "0"):
        return False
    if text in (MALICIOUS, "1", "jailbreak", "injection", "prompt injection"):
        return True
    raise InvalidLabel(f"A Prompt Guard label is {VALUE_HELP}; got {value!r}.")


def judged_messages(messages: Sequence[Mapping[str, Any]], scores: Mapping[str, float] | None = None
                    ) -> list[JudgedMessage]:
    """The user messages with text (stored chat format), with their stored scores."""
    found = []
    for index, message in enumerate(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content", "")
        text = content if isinstance(content, str) else "\n".join(
            p.get("text") or "" for p in content if p.get("type") == "text")
        if text.strip():
            score = (scores or {}).get(str(index))
            found.append(JudgedMessage(index, text, None if score is None else float(score)))
    return found


# Writing, inside the caller's transaction


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def put_labels(db: Any, example_id: int, reviewer: str, labels: Sequence[PromptGuardInput],
               at: str, *, reason: str = "", settle_now: bool = True) -> list[tuple[int, str]]:
    """Write a reviewer's labels of the example's user messages; (label id, "create" / "edit" /
    "unchanged") each. `settle_now` False leaves settling to the caller (a queue settles once
    its outcome is recorded, for the overlap)."""
    reviewer = _reviewer(reviewer)
    row = db.execute("SELECT conversation, prompt_guard_model, prompt_guard_scores FROM "
                     "examples WHERE id = ?", [example_id]).fetchone()
    if row is None:
        raise NotFound(f"No example {example_id}. Pick one from the list.")
    scores = json.loads(row[2] or "{}")
    users = {m.index: m for m in judged_messages(json.loads(row[0]), scores)}
    seen: set[int] = set()
    out = []
    for label in labels:
        index = index_of(label.message_index)
        if index not in users:
            raise InvalidLabel(
                f"Message {index + 1} of example {example_id} is not a user message with text; "
                "Prompt Guard labels go on user messages "
                f"({', '.join(str(i + 1) for i in users) or 'it has none'}).")
        if index in seen:
            raise InvalidLabel(f"Message {index + 1} is labelled twice; give it one label.")
        seen.add(index)
        values = _values(label, row[1] or "", users[index].score)
        current = _active(db, example_id, index, reviewer)
        if current is None:
            label_id = db.execute(
                "INSERT INTO prompt_guard_labels (example_id, message_index, reviewer, malicious, "
                "model, preprocessing, score, note, created_at, updated_at) VALUES (?, ?, ?, ?, "
                "?, ?, ?, ?, ?, ?)", [example_id, index, reviewer, values["malicious"],
                                      values["model"], values["preprocessing"], values["score"],
                                      values["note"], at, at]).lastrowid
            _event(db, example_id, index, label_id, "create", reviewer, reason, None, values, at)
            out.append((int(label_id), "create"))
        elif all(current[k] == v for k, v in values.items()):
            out.append((current["id"], "unchanged"))
        else:
            db.execute("UPDATE prompt_guard_labels SET malicious = ?, model = ?, preprocessing = ?,"
                       " score = ?, note = ?, updated_at = ? WHERE id = ?",
                       [values["malicious"], values["model"], values["preprocessing"],
                        values["score"], values["note"], at, current["id"]])
            _event(db, example_id, index, current["id"], "edit", reviewer, reason,
                   {k: current[k] for k in values}, values, at)
            out.append((current["id"], "edit"))
        if settle_now:
            settle(db, example_id, index, at, by=reviewer)
    return out


def settle_example(db: Any, example_id: int, at: str, *, by: str = "") -> None:
    """`settle` every message of the example that has Prompt Guard labels."""
    for (index,) in db.execute("SELECT DISTINCT message_index FROM prompt_guard_labels WHERE "
                               "example_id = ? ORDER BY 1", [example_id]).fetchall():
        settle(db, example_id, index, at, by=by)


def settle(db: Any, example_id: int, index: int, at: str, *, by: str = "") -> None:
    """Bring a message's final label and disagreement in line with its active labels."""
    current = _final_row(db, example_id, index)
    if current is not None and current["source"] == ADJUDICATED:
        return
    labels = db.execute(
        "SELECT reviewer, malicious, model, preprocessing, score FROM prompt_guard_labels "
        "WHERE example_id = ? AND message_index = ? AND deleted_at IS NULL "
        "ORDER BY updated_at DESC, id DESC", [example_id, index]).fetchall()
    needed, queue_id = required_reviews(db, example_id)
    values = {r[1] for r in labels}
    if labels and len(labels) >= needed and len(values) == 1:
        after = {"malicious": labels[0][1], "source": AGREED,
                 "reviewers": sorted(r[0] for r in labels), "model": labels[0][2],
                 "preprocessing": labels[0][3], "score": labels[0][4]}
        if current is None or _final_json(current) != after:
            _write_final(db, example_id, index, after, None, "reviewers agree", at)
            _event(db, example_id, index, None, "final", by, "reviewers agree",
                   None if current is None else _final_json(current), after, at)
        _close_open(db, example_id, index, SETTLED, at, by, "the reviewers now agree")
        return
    if current is not None:
        db.execute("DELETE FROM prompt_guard_final WHERE example_id = ? AND message_index = ?",
                   [example_id, index])
        why = "reviewers disagree" if len(values) > 1 else "fewer labels than the overlap"
        _event(db, example_id, index, None, "cleared", by, why, _final_json(current), None, at)
    if labels and len(labels) >= needed:
        if _open_id(db, example_id, index) is None:
            db.execute("INSERT INTO prompt_guard_disagreements (example_id, message_index, "
                       "queue_id, opened_at, status) VALUES (?, ?, ?, ?, ?)",
                       [example_id, index, queue_id, at, OPEN])
            _event(db, example_id, index, None, "disagreement", by, "reviewers disagree",
                   None, None, at)
    else:
        _close_open(db, example_id, index, SETTLED, at, by, "fewer labels than the overlap")


# Through the store


def record_labels(store: Store, example_id: int, reviewer: str,
                  labels: Sequence[PromptGuardInput], *, reason: str = ""
                  ) -> list[PromptGuardLabel]:
    """Save a reviewer's labels of an example's user messages in one transaction (a second
    label from the same reviewer on a message edits theirs); the labels as stored."""
    return [saved for saved, _ in record(store, example_id, reviewer, labels, reason=reason)]


def record(store: Store, example_id: int, reviewer: str, labels: Sequence[PromptGuardInput], *,
           reason: str = "") -> list[tuple[PromptGuardLabel, str]]:
    """`record_labels`, with what each did: "create", "edit" or "unchanged"."""
    with store._write():
        written = put_labels(store.db, example_id, reviewer, labels, now(), reason=reason)
    if not written:
        return []
    by_id = {r["id"]: _label(r) for r in _rows(
        store, f"SELECT * FROM prompt_guard_labels WHERE id IN ({','.join('?' * len(written))})",
        [i for i, _ in written])}
    return [(by_id[i], action) for i, action in written]


def delete_label(store: Store, label_id: int, reviewer: str, reason: str, *,
                 lead: bool = False) -> None:
    """Soft delete (its author, or a lead: the caller checked the role); the message's final
    label is settled again."""
    reviewer = _reviewer(reviewer)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidLabel("Say why the label is deleted (reason); deletions are recorded.")
    with store._write():
        rows = _rows(store, "SELECT * FROM prompt_guard_labels WHERE id = ? AND deleted_at IS "
                            "NULL", [label_id])
        if not rows:
            raise NotFound(f"No Prompt Guard label {label_id} (it may have been deleted).")
        row = rows[0]
        if row["reviewer"] != reviewer and not lead:
            raise InvalidLabel(f"Prompt Guard label {label_id} is {row['reviewer']}'s: only its "
                               "author or a lead deletes it.")
        at = now()
        store.db.execute("UPDATE prompt_guard_labels SET deleted_at = ? WHERE id = ?",
                         [at, label_id])
        _event(store.db, row["example_id"], row["message_index"], label_id, "delete", reviewer,
               reason.strip(), {k: row[k] for k in _KEYS}, None, at)
        settle(store.db, row["example_id"], row["message_index"], at, by=reviewer)


def resolve(store: Store, example_id: int, message_index: int, lead: str, malicious: Any,
            reason: str) -> PromptGuardFinal:
    """A lead's decision: the message's final label, recorded with who, when and why. The
    caller checks that `lead` is a lead."""
    lead = _reviewer(lead, "Say which lead decides (lead).")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidLabel("Say why (reason): a lead's decision is recorded with its reason.")
    value, index = parse_value(malicious), index_of(message_index)
    with store._write():
        row = store.db.execute("SELECT conversation, prompt_guard_model, prompt_guard_scores "
                               "FROM examples WHERE id = ?", [example_id]).fetchone()
        if row is None:
            raise NotFound(f"No example {example_id}. Pick one from the list.")
        users = {m.index: m for m in judged_messages(json.loads(row[0]), json.loads(row[2] or
                                                                                    "{}"))}
        if index not in users:
            raise InvalidLabel(f"Message {index + 1} of example {example_id} is not a user "
                               "message with text.")
        labels = store.db.execute(
            "SELECT reviewer, model, preprocessing, score FROM prompt_guard_labels WHERE "
            "example_id = ? AND message_index = ? AND deleted_at IS NULL ORDER BY updated_at "
            "DESC, id DESC", [example_id, index]).fetchall()
        given = labels[0][1:] if labels else (row[1] or "", "none", users[index].score)
        after = {"malicious": int(value), "source": ADJUDICATED,
                 "reviewers": sorted(r[0] for r in labels), "model": given[0],
                 "preprocessing": given[1], "score": given[2]}
        at = now()
        current = _final_row(store.db, example_id, index)
        _write_final(store.db, example_id, index, after, lead, reason.strip(), at)
        _event(store.db, example_id, index, None, "adjudicated", lead, reason.strip(),
               None if current is None else _final_json(current), after, at)
        _close_open(store.db, example_id, index, RESOLVED, at, lead, reason.strip(), int(value))
    return finals_of(store, example_id)[index]


# Reading


def labels_of(store: Store, example_id: int, reviewer: str | None = None
              ) -> list[PromptGuardLabel]:
    """The active labels of an example (one reviewer's, when named), by message and reviewer."""
    sql = "SELECT * FROM prompt_guard_labels WHERE example_id = ? AND deleted_at IS NULL"
    params: list[Any] = [example_id]
    if reviewer is not None:
        sql += " AND reviewer = ?"
        params.append(reviewer.strip())
    return [_label(r) for r in _rows(store, sql + " ORDER BY message_index, reviewer", params)]


def finals_of(store: Store, example_id: int) -> dict[int, PromptGuardFinal]:
    """The example's final Prompt Guard labels by message index."""
    return {r["message_index"]: _final(r) for r in _rows(
        store, "SELECT * FROM prompt_guard_final WHERE example_id = ? ORDER BY message_index",
        [example_id])}


def history(store: Store, example_id: int) -> list[dict[str, Any]]:
    """Every change of the example's Prompt Guard labels, final labels and disagreements."""
    return [{**r, "before": None if r["before"] is None else json.loads(r["before"]),
             "after": None if r["after"] is None else json.loads(r["after"])}
            for r in _rows(store, "SELECT * FROM prompt_guard_events WHERE example_id = ? "
                                  "ORDER BY id", [example_id])]


def disagreements(store: Store, *, status: str | None = OPEN) -> list[PromptGuardDisagreement]:
    """The messages whose reviewers disagree, oldest first (`status` None: all)."""
    sql = ("SELECT d.*, q.name AS queue FROM prompt_guard_disagreements d LEFT JOIN queues q "
           "ON q.id = d.queue_id")
    params: list[Any] = []
    if status is not None:
        if status not in (OPEN, RESOLVED, SETTLED):
            raise LabelsError(f"Unknown status {status!r}. Use {OPEN}, {RESOLVED} or {SETTLED}.")
        sql += " WHERE d.status = ?"
        params.append(status)
    rows = _rows(store, sql + " ORDER BY d.id", params)
    out = []
    for r in rows:
        labels = tuple({"reviewer": x.reviewer, "label": x.value, "note": x.note}
                       for x in labels_of(store, r["example_id"])
                       if x.message_index == r["message_index"])
        out.append(PromptGuardDisagreement(
            r["id"], r["example_id"], r["message_index"], r["queue"], r["opened_at"],
            r["status"], r["closed_at"], r["resolved_by"], r["reason"] or "", labels))
    return out


def prompt_guard_rows(store: Store, *, final_only: bool = True,
                      labels: LabelChoice | str | None = None,
                      ids: Iterable[int] | None = None) -> list[PromptGuardRow]:
    """The settled Prompt Guard labels: one row per labelled user message, by example and
    message. `final_only` (the default): the final labels; False: also the messages whose
    active labels all agree without a final label yet. `labels` ("final", "all",
    "reviewer:NAME") overrides `final_only`; `ids` keeps only those examples. Examples stored
    without a conversation that can be read are left out."""
    choice = LabelChoice.parse(labels if labels is not None else FINAL if final_only else ALL)
    wanted = None if ids is None else set(ids)
    found: dict[tuple[int, int], tuple[bool, str, str, float | None]] = {}
    finals = _rows(store, "SELECT * FROM prompt_guard_final", [])
    if choice.kind != "reviewer":
        for r in finals:
            found[(r["example_id"], r["message_index"])] = (
                bool(r["malicious"]), r["model"], r["preprocessing"], r["score"])
    if choice.kind != FINAL:
        sql = ("SELECT * FROM prompt_guard_labels WHERE deleted_at IS NULL"
               + (" AND reviewer = ?" if choice.kind == "reviewer" else "")
               + " ORDER BY updated_at DESC, id DESC")
        grouped: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for r in _rows(store, sql, [choice.reviewer] if choice.kind == "reviewer" else []):
            grouped.setdefault((r["example_id"], r["message_index"]), []).append(r)
        for key, rows in grouped.items():
            if key not in found and len({r["malicious"] for r in rows}) == 1:
                r = rows[0]
                found[key] = (bool(r["malicious"]), r["model"], r["preprocessing"], r["score"])
    examples = {e for e, _ in found if wanted is None or e in wanted}
    texts = _texts(store, examples)
    out = []
    for (example_id, index), (malicious, model, preprocessing, score) in sorted(found.items()):
        text = texts.get(example_id, {}).get(index)
        if text is not None:
            out.append(PromptGuardRow(example_id, index, text, malicious, score, model,
                                      preprocessing))
    return out


# Helpers

_KEYS = ("malicious", "model", "preprocessing", "score", "note")


def _values(label: PromptGuardInput, stored_model: str, stored_score: float | None
            ) -> dict[str, Any]:
    try:
        preprocessing = check_preprocessing(label.preprocessing)
    except GuardError as exc:
        raise InvalidLabel(str(exc)) from None
    score = stored_score if label.score is None else label.score
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidLabel(f"A Prompt Guard score is a number from 0 to 1, got {score!r}.")
        score = float(score)
    model = stored_model if label.model is None else str(label.model).strip()
    return {"malicious": int(parse_value(label.malicious)), "model": model,
            "preprocessing": preprocessing, "score": score, "note": label.note or ""}


def index_of(value: Any) -> int:
    """A message index as the API may send it: 2, 2.0 or "2"."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or number < 0:
        raise InvalidLabel(f"A message index is a whole number from 0, got {value!r}.")
    return int(number)


def _reviewer(name: Any, missing: str = "Say who is reviewing (reviewer): enter your name or "
                                        "handle.") -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise InvalidLabel(missing)
    return name


def _active(db: Any, example_id: int, index: int, reviewer: str) -> dict[str, Any] | None:
    cursor = db.execute("SELECT * FROM prompt_guard_labels WHERE example_id = ? AND "
                        "message_index = ? AND reviewer = ? AND deleted_at IS NULL",
                        [example_id, index, reviewer])
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row,
                                             strict=True))


def _final_row(db: Any, example_id: int, index: int) -> dict[str, Any] | None:
    cursor = db.execute("SELECT * FROM prompt_guard_final WHERE example_id = ? AND "
                        "message_index = ?", [example_id, index])
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row,
                                             strict=True))


def _final_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"malicious": int(row["malicious"]), "source": row["source"],
            "reviewers": json.loads(row["reviewers"]) if isinstance(row["reviewers"], str)
            else list(row["reviewers"]), "model": row["model"],
            "preprocessing": row["preprocessing"], "score": row["score"]}


def _write_final(db: Any, example_id: int, index: int, after: Mapping[str, Any],
                 decided_by: str | None, reason: str, at: str) -> None:
    db.execute(
        "INSERT INTO prompt_guard_final (example_id, message_index, malicious, source, "
        "reviewers, decided_by, reason, decided_at, model, preprocessing, score) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (example_id, message_index) DO UPDATE SET "
        "malicious = excluded.malicious, source = excluded.source, reviewers = "
        "excluded.reviewers, decided_by = excluded.decided_by, reason = excluded.reason, "
        "decided_at = excluded.decided_at, model = excluded.model, preprocessing = "
        "excluded.preprocessing, score = excluded.score",
        [example_id, index, after["malicious"], after["source"], json.dumps(after["reviewers"]),
         decided_by, reason, at, after["model"], after["preprocessing"], after["score"]])


def _open_id(db: Any, example_id: int, index: int) -> int | None:
    row = db.execute("SELECT id FROM prompt_guard_disagreements WHERE example_id = ? AND "
                     "message_index = ? AND status = ?", [example_id, index, OPEN]).fetchone()
    return None if row is None else row[0]


def _close_open(db: Any, example_id: int, index: int, status: str, at: str, by: str,
                reason: str, malicious: int | None = None) -> None:
    if _open_id(db, example_id, index) is None:
        return
    db.execute("UPDATE prompt_guard_disagreements SET status = ?, closed_at = ?, resolved_by = ?,"
               " reason = ?, malicious = ? WHERE example_id = ? AND message_index = ? AND "
               "status = ?", [status, at, by or None, reason, malicious, example_id, index, OPEN])
    if status == SETTLED:
        _event(db, example_id, index, None, "disagreement settled", by, reason, None, None, at)


def _event(db: Any, example_id: int, index: int, label_id: int | None, action: str, by: str,
           reason: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
           at: str) -> None:
    db.execute("INSERT INTO prompt_guard_events (example_id, message_index, label_id, action, "
               "by, reason, before, after, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               [example_id, index, label_id, action, by or None, reason,
                None if before is None else json.dumps(dict(before)),
                None if after is None else json.dumps(dict(after)), at])


def _rows(store: Store, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    with store._lock:
        return list(store.db.query(sql, params))


def _texts(store: Store, example_ids: Iterable[int]) -> dict[int, dict[int, str]]:
    wanted = sorted(example_ids)
    out: dict[int, dict[int, str]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        for r in _rows(store, "SELECT id, conversation FROM examples WHERE id IN "
                              f"({','.join('?' * len(chunk))})", chunk):
            out[r["id"]] = {m.index: m.text for m in judged_messages(json.loads(r["conversation"]))}
    return out


def _label(r: Mapping[str, Any]) -> PromptGuardLabel:
    return PromptGuardLabel(r["id"], r["example_id"], r["message_index"], r["reviewer"],
                            bool(r["malicious"]), r["model"], r["preprocessing"], r["score"],
                            r["note"] or "", r["created_at"], r["updated_at"])


def _final(r: Mapping[str, Any]) -> PromptGuardFinal:
    return PromptGuardFinal(r["example_id"], r["message_index"], bool(r["malicious"]),
                            r["source"], tuple(json.loads(r["reviewers"])), r["decided_by"] or "",
                            r["reason"] or "", r["decided_at"], r["model"], r["preprocessing"],
                            r["score"])
