"""One final label per example, and the disagreements a lead settles.

The rule (`settle`, run in the transaction of every label change, and by the migration):

- A lead's decision (`resolve`) is the final label, whatever the reviewers' labels do later.
- Otherwise, once an example has as many active labels as its queue's overlap (the largest
  overlap of the queues it was labelled through; 1 outside queues) and they all agree (verdict,
  categories and "none fits"), that is its final label.
- When they reach the overlap and disagree, the example has no final label and an open
  disagreement: the disagreements queue a lead works through (`open_disagreements`).
- Fewer labels than the overlap (a label deleted, a queue item reopened): no final label yet,
  and an open disagreement is withdrawn ("settled").

Every change of a final label or a disagreement is a row of `final_events`. `LabelChoice` is
what metrics, tuning and exports read: the final labels (the default), every active label, or
one reviewer's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from labels.errors import InvalidLabel, LabelsError
from labels.records import SAFE, UNSAFE

if TYPE_CHECKING:  # the store imports this module for `settle`
    from labels.store import Store

AGREED, ADJUDICATED = "agreed", "adjudicated"
OPEN, RESOLVED, SETTLED = "open", "resolved", "settled"
FINAL, ALL, REVIEWER = "final", "all", "reviewer"
CHOICES_HELP = "final (default: one settled label per example), all, or reviewer:NAME"


@dataclass(frozen=True)
class LabelChoice:
    """Which labels a reader takes: `final`, `all` (every active label) or `reviewer:NAME`."""

    kind: str = FINAL
    reviewer: str | None = None

    @classmethod
    def parse(cls, text: LabelChoice | str | None) -> LabelChoice:
        if isinstance(text, LabelChoice):
            return text
        value = (text or FINAL).strip()
        if value.lower() in (FINAL, ALL):
            return cls(value.lower())
        head, sep, name = value.partition(":")
        if sep and head.strip().lower() == REVIEWER and name.strip():
            return cls(REVIEWER, name.strip())
        raise LabelsError(f"Unknown label choice {text!r}. Use {CHOICES_HELP}.")

    def __str__(self) -> str:
        return f"{REVIEWER}:{self.reviewer}" if self.kind == REVIEWER else self.kind


@dataclass(frozen=True)
class FinalLabel:
    example_id: int
    label: str
    categories: tuple[str, ...]
    none_fits: bool  # unsafe, and none of the family's categories fits
    source: str  # AGREED or ADJUDICATED
    reviewers: tuple[str, ...]  # whose labels it stands on (agreed) or who disagreed
    decided_by: str  # the lead for ADJUDICATED, else ""
    reason: str
    decided_at: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "categories": list(self.categories),
                "reviewers": list(self.reviewers)}


@dataclass(frozen=True)
class Answer:
    """The one answer an export or a metric takes for an example."""

    label: str
    categories: tuple[str, ...] = ()
    none_fits: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "categories": list(self.categories),
                "none_fits": self.none_fits}


@dataclass(frozen=True)
class Disagreement:
    id: int
    example_id: int
    queue: str | None
    opened_at: str
    status: str  # OPEN, RESOLVED or SETTLED
    closed_at: str | None
    resolved_by: str | None
    reason: str
    labels: tuple[dict[str, Any], ...]  # the active labels: reviewer, label, categories, note

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}


def final_from_row(row: Mapping[str, Any]) -> FinalLabel:
    return FinalLabel(
        example_id=row["example_id"], label=row["label"],
        categories=tuple(json.loads(row["categories"])), none_fits=bool(row["none_fits"]),
        source=row["source"], reviewers=tuple(json.loads(row["reviewers"])),
        decided_by=row["decided_by"] or "", reason=row["reason"] or "",
        decided_at=row["decided_at"])


# The rule, inside a write transaction


def required_reviews(db: Any, example_id: int) -> tuple[int, int | None]:
    """(labels an example needs, the queue that asks most); (1, None) outside queues."""
    row = db.execute(
        "SELECT q.overlap, q.id FROM queue_outcomes o JOIN queues q ON q.id = o.queue_id "
        "WHERE o.example_id = ? ORDER BY q.overlap DESC, q.id LIMIT 1", [example_id]).fetchone()
    return (row[0], row[1]) if row else (1, None)


def settle(db: Any, example_id: int, at: str, *, by: str = "") -> None:
    """Bring the example's final label and disagreement in line with its active labels."""
    current = _final_row(db, example_id)
    if current is not None and current["source"] == ADJUDICATED:
        return
    labels = db.execute(
        "SELECT reviewer, label, categories, none_fits FROM labels WHERE example_id = ? "
        "AND deleted_at IS NULL ORDER BY reviewer", [example_id]).fetchall()
    needed, queue_id = required_reviews(db, example_id)
    values = {(r[1], r[2], int(r[3] or 0)) for r in labels}
    if labels and len(labels) >= needed and len(values) == 1:
        label, categories, none_fits = values.pop()
        reviewers = json.dumps([r[0] for r in labels])
        after = {"label": label, "categories": json.loads(categories), "none_fits": none_fits,
                 "source": AGREED, "reviewers": json.loads(reviewers)}
        if current is None or _final_json(current) != after:
            db.execute(
                "INSERT INTO final_labels (example_id, label, categories, none_fits, source, "
                "reviewers, decided_by, reason, decided_at) VALUES (?, ?, ?, ?, ?, ?, NULL, "
                "'reviewers agree', ?) ON CONFLICT (example_id) DO UPDATE SET label = "
                "excluded.label, categories = excluded.categories, none_fits = "
                "excluded.none_fits, source = excluded.source, reviewers = excluded.reviewers, "
                "decided_by = NULL, reason = excluded.reason, decided_at = excluded.decided_at",
                [example_id, label, categories, none_fits, AGREED, reviewers, at])
            _event(db, example_id, "final", by, "reviewers agree",
                   None if current is None else _final_json(current), after, at)
        _close_open(db, example_id, SETTLED, at, by, "the reviewers now agree")
        return
    if current is not None:
        db.execute("DELETE FROM final_labels WHERE example_id = ?", [example_id])
        why = "reviewers disagree" if len(values) > 1 else "fewer labels than the overlap"
        _event(db, example_id, "cleared", by, why, _final_json(current), None, at)
    if labels and len(labels) >= needed:
        if _open_row(db, example_id) is None:
            db.execute("INSERT INTO disagreements (example_id, queue_id, opened_at, status) "
                       "VALUES (?, ?, ?, ?)", [example_id, queue_id, at, OPEN])
            _event(db, example_id, "disagreement", by, "reviewers disagree", None, None, at)
    else:
        _close_open(db, example_id, SETTLED, at, by, "fewer labels than the overlap")


def reopen_queue_items(db: Any, label_id: int) -> int:
    """A deleted queue label gives its item back: the outcome goes, the item is open again and
    every reviewer's cursor steps back to it. Returns the items reopened."""
    outcomes = db.execute(
        "SELECT o.item_id, o.reviewer, o.queue_id, i.position, i.closed_at, i.done "
        "FROM queue_outcomes o JOIN queue_items i ON i.id = o.item_id "
        "WHERE o.label_id = ? AND o.status = 'labelled'", [label_id]).fetchall()
    for item_id, reviewer, queue_id, position, closed_at, done in outcomes:
        db.execute("DELETE FROM queue_outcomes WHERE item_id = ? AND reviewer = ?",
                   [item_id, reviewer])
        db.execute("UPDATE queue_items SET done = ?, closed_at = NULL WHERE id = ?",
                   [max(0, done - 1), item_id])
        db.execute("UPDATE queues SET labels = labels - 1, complete = complete - ? WHERE id = ?",
                   [int(closed_at is not None), queue_id])
        db.execute("UPDATE queue_reviewers SET labelled = labelled - (reviewer = ?), "
                   "position = min(position, ?) WHERE queue_id = ?",
                   [reviewer, position, queue_id])
    return len(outcomes)


def _final_row(db: Any, example_id: int) -> dict[str, Any] | None:
    cursor = db.execute("SELECT * FROM final_labels WHERE example_id = ?", [example_id])
    row = cursor.fetchone()
    return None if row is None else dict(zip([c[0] for c in cursor.description], row, strict=True))


def _open_row(db: Any, example_id: int) -> tuple[Any, ...] | None:
    return db.execute("SELECT id FROM disagreements WHERE example_id = ? AND status = ?",
                      [example_id, OPEN]).fetchone()


def _final_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"label": row["label"], "categories": json.loads(row["categories"]),
            "none_fits": int(row["none_fits"]), "source": row["source"],
            "reviewers": json.loads(row["reviewers"])}


def _close_open(db: Any, example_id: int, status: str, at: str, by: str, reason: str,
                answer: Answer | None = None) -> None:
    if _open_row(db, example_id) is None:
        return
    db.execute(
        "UPDATE disagreements SET status = ?, closed_at = ?, resolved_by = ?, reason = ?, "
        "label = ?, categories = ? WHERE example_id = ? AND status = ?",
        [status, at, by or None, reason, answer and answer.label,
         None if answer is None else json.dumps(list(answer.categories)), example_id, OPEN])
    if status == SETTLED:
        _event(db, example_id, "disagreement settled", by, reason, None, None, at)


def _event(db: Any, example_id: int, action: str, by: str, reason: str,
           before: dict[str, Any] | None, after: dict[str, Any] | None, at: str) -> None:
    db.execute("INSERT INTO final_events (example_id, action, by, reason, before, after, at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               [example_id, action, by or None, reason,
                None if before is None else json.dumps(before),
                None if after is None else json.dumps(after), at])


# Reading and deciding, through the store


def get_final(store: Store, example_id: int) -> FinalLabel | None:
    with store._lock:
        row = _final_row(store.db, example_id)
    return None if row is None else final_from_row(row)


def resolve(store: Store, example_id: int, lead: str, label: str,
            categories: Sequence[str] | str = (), reason: str = "", *,
            none_fits: bool = False) -> FinalLabel:
    """A lead's decision: the example's final label, recorded with who, when and why.

    The caller checks that `lead` is a lead (the app's accounts, or whoever holds the
    database on the command line)."""
    from guard.core.categories import parse_codes
    from labels.content import check_label
    from labels.records import LabelInput
    from labels.store import now

    lead = lead.strip() if isinstance(lead, str) else ""
    if not lead:
        raise InvalidLabel("Say which lead decides (lead).")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidLabel("Say why (reason): a lead's decision is recorded with its reason.")
    codes = parse_codes(categories if isinstance(categories, str) else list(categories))
    with store._lock:
        allowed, _ = store._policy(example_id)
        checked = check_label(LabelInput(lead, label, codes, "", none_fits), allowed)
        at = now()
        with store._write():
            current = _final_row(store.db, example_id)
            reviewers = [r[0] for r in store.db.execute(
                "SELECT reviewer FROM labels WHERE example_id = ? AND deleted_at IS NULL "
                "ORDER BY reviewer", [example_id])]
            after = {"label": checked.label, "categories": list(checked.categories),
                     "none_fits": int(checked.none_fits), "source": ADJUDICATED,
                     "reviewers": reviewers}
            store.db.execute(
                "INSERT INTO final_labels (example_id, label, categories, none_fits, source, "
                "reviewers, decided_by, reason, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (example_id) DO UPDATE SET label = excluded.label, categories = "
                "excluded.categories, none_fits = excluded.none_fits, source = excluded.source, "
                "reviewers = excluded.reviewers, decided_by = excluded.decided_by, reason = "
                "excluded.reason, decided_at = excluded.decided_at",
                [example_id, checked.label, json.dumps(list(checked.categories)),
                 int(checked.none_fits), ADJUDICATED, json.dumps(reviewers), lead,
                 reason.strip(), at])
            _event(store.db, example_id, "adjudicated", lead, reason.strip(),
                   None if current is None else _final_json(current), after, at)
            _close_open(store.db, example_id, RESOLVED, at, lead, reason.strip(),
                        Answer(checked.label, checked.categories, checked.none_fits))
    final = get_final(store, example_id)
    assert final is not None
    return final


def disagreements(store: Store, *, status: str | None = OPEN,
                  queue: str | None = None) -> list[Disagreement]:
    """The disagreements queue, oldest first: open ones by default (`status` None: all)."""
    sql = ("SELECT d.*, q.name AS queue FROM disagreements d LEFT JOIN queues q "
           "ON q.id = d.queue_id WHERE 1 = 1")
    params: list[Any] = []
    if status is not None:
        if status not in (OPEN, RESOLVED, SETTLED):
            raise LabelsError(f"Unknown status {status!r}. Use {OPEN}, {RESOLVED} or {SETTLED}.")
        sql += " AND d.status = ?"
        params.append(status)
    if queue is not None:
        sql += " AND q.name = ?"
        params.append(queue)
    with store._lock:
        rows = list(store.db.query(sql + " ORDER BY d.id", params))
        labels = _labels_of(store, {r["example_id"] for r in rows})
    return [Disagreement(
        id=r["id"], example_id=r["example_id"], queue=r["queue"], opened_at=r["opened_at"],
        status=r["status"], closed_at=r["closed_at"], resolved_by=r["resolved_by"],
        reason=r["reason"] or "", labels=tuple(labels.get(r["example_id"], ())))
        for r in rows]


def _labels_of(store: Store, ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    wanted = sorted(ids)
    if not wanted:
        return found
    marks = ",".join("?" * len(wanted))
    for r in store.db.query(
            "SELECT example_id, reviewer, label, categories, none_fits, note FROM labels "
            f"WHERE deleted_at IS NULL AND example_id IN ({marks}) ORDER BY reviewer", wanted):
        found.setdefault(r["example_id"], []).append(
            {"reviewer": r["reviewer"], "label": r["label"],
             "categories": json.loads(r["categories"]), "none_fits": bool(r["none_fits"]),
             "note": r["note"] or ""})
    return found


def final_history(store: Store, example_id: int) -> list[dict[str, Any]]:
    """Every change of the example's final label and disagreement, oldest first."""
    with store._lock:
        rows = list(store.db.query(
            "SELECT * FROM final_events WHERE example_id = ? ORDER BY id", [example_id]))
    return [{**r, "before": None if r["before"] is None else json.loads(r["before"]),
             "after": None if r["after"] is None else json.loads(r["after"])} for r in rows]


def answers(store: Store, choice: LabelChoice | str = FINAL,
            ids: Iterable[int] | None = None) -> dict[int, Answer]:
    """The one answer per example under `choice`: its final label; with `all`, the label its
    active labels agree on (none when they differ); with `reviewer:NAME`, theirs. Examples
    without one are absent."""
    choice = LabelChoice.parse(choice)
    wanted = None if ids is None else set(ids)
    out: dict[int, Answer] = {}
    with store._lock:
        if choice.kind == FINAL:
            rows = store.db.execute(
                "SELECT example_id, label, categories, none_fits FROM final_labels").fetchall()
            for example_id, label, categories, none_fits in rows:
                out[example_id] = Answer(label, tuple(json.loads(categories)), bool(none_fits))
        else:
            sql = ("SELECT example_id, label, categories, none_fits FROM labels "
                   "WHERE deleted_at IS NULL")
            params: list[Any] = []
            if choice.kind == REVIEWER:
                sql += " AND reviewer = ?"
                params.append(choice.reviewer)
            seen: dict[int, set[tuple[str, str, int]]] = {}
            for example_id, label, categories, none_fits in store.db.execute(sql, params):
                seen.setdefault(example_id, set()).add((label, categories, int(none_fits or 0)))
            for example_id, values in seen.items():
                if len(values) == 1:
                    label, categories, none_fits = next(iter(values))
                    out[example_id] = Answer(label, tuple(json.loads(categories)),
                                             bool(none_fits))
    if wanted is not None:
        out = {k: v for k, v in out.items() if k in wanted}
    return out


def target(answer: Answer) -> str:
    """The answer Llama Guard is trained to give: 'safe' or 'unsafe\\nS1,S3'."""
    if answer.label != UNSAFE:
        return SAFE
    return "unsafe\n" + ",".join(answer.categories) if answer.categories else UNSAFE



# The lead's view


@dataclass(frozen=True)
class ReviewerStats:
    reviewer: str
    labelled: int  # active labels
    per_hour: float | None  # labels per hour between their first and last (None under two)
    skipped: int  # queue items passed
    skip_rate: float | None  # skipped / (skipped + labelled through queues)
    with_final: int  # their labels on examples that have a final label
    agree_final: float | None  # the share of those that match it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    items: int
    complete: int
    labels: int
    skips: int
    open_disagreements: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def reviewer_stats(store: Store) -> list[ReviewerStats]:
    """Per reviewer: labels, labels per hour, skip rate, agreement with the final label."""
    from datetime import datetime

    with store._lock:
        labels = store.db.execute(
            "SELECT l.reviewer, count(*), min(l.created_at), max(l.created_at), "
            "sum(f.example_id IS NOT NULL), sum(f.example_id IS NOT NULL AND f.label = l.label "
            "AND f.categories = l.categories AND f.none_fits = l.none_fits) "
            "FROM labels l LEFT JOIN final_labels f ON f.example_id = l.example_id "
            "WHERE l.deleted_at IS NULL GROUP BY l.reviewer").fetchall()
        outcomes = dict((r, (lab, sk)) for r, lab, sk in store.db.execute(
            "SELECT reviewer, sum(status = 'labelled'), sum(status = 'skipped') "
            "FROM queue_outcomes GROUP BY reviewer").fetchall())
    rows = {}
    for reviewer, n, first, last, with_final, agree in labels:
        hours = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds() / 3600
        rows[reviewer] = [n, round(n / hours, 1) if n > 1 and hours > 0 else None,
                          with_final or 0, agree or 0]
    out = []
    for reviewer in sorted(set(rows) | set(outcomes)):
        n, per_hour, with_final, agree = rows.get(reviewer, [0, None, 0, 0])
        queued, skipped = outcomes.get(reviewer, (0, 0))
        out.append(ReviewerStats(
            reviewer, n, per_hour, skipped or 0,
            round(skipped / (skipped + queued), 3) if (skipped or queued) else None,
            with_final, round(agree / with_final, 3) if with_final else None))
    return out


def queue_stats(store: Store) -> list[QueueStats]:
    """Per queue: progress and open disagreements, oldest queue first."""
    with store._lock:
        rows = store.db.execute(
            "SELECT q.name, q.items, q.complete, q.labels, q.skips, (SELECT count(*) FROM "
            "disagreements d WHERE d.queue_id = q.id AND d.status = 'open') FROM queues q "
            "ORDER BY q.id").fetchall()
    return [QueueStats(*r) for r in rows]
