"""Review queues: cases picked from a run or a file, handed to reviewers one at a time.

A queue holds conversations with the model's stored answer. `next_item` gives a reviewer the
first item, in queue order, that they have neither labelled nor skipped and that still needs a
label; `submit` saves the label as a labeled example through the store (one transaction with
the queue's record of it); `skip` passes an item. Reviewers work blind: an item carries the
model's answer, never another reviewer's label.

Fair hand-out: `next_item` leases the item to the reviewer for `lease_s` seconds (default 10
minutes). Live leases held by others count against the item's free slots, so with overlap 1 two
reviewers working at once never get the same item; an abandoned lease lapses and the item goes
back to the pool. Asking again while holding a lease returns the same item (a page reload does
not take a second slot). A late submit is refused only when the item got all its labels
meanwhile, so an item never ends with more labels than its overlap.

Resubmitting an item you labelled updates your label (an "edit" in the example's history);
submitting an item you skipped labels it while it still needs labels.

Items with no model answer (failed rows, imported conversations) are saved as examples the
model did not judge (`judged` 0): shown as "not judged" and left out of model metrics.

Each labelled example records where it came from (`source`): the run and row or the file and
line, the dataset and its own gold label when it had one, and the queue. An item's labels settle
its example's final label (labels/final.py) once the queue's overlap is reached.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from guard.core.categories import Family, categories_for, guess_family, parse_codes
from guard.core.conversation import from_messages
from guard.core.datasets import conversation_for, read_dataset
from guard.core.errors import DatasetError, GuardError
from guard.core.prompts import CustomCategory
from labels import prompt_guard as pg
from labels.content import (
    allowed_codes,
    canonical_json,
    check_family,
    check_label,
    content_hash,
    custom_table,
    prepare_example,
)
from labels.errors import InvalidLabel, LabelsError, NotFound
from labels.final import settle
from labels.records import SAFE, UNSAFE, ExampleInput, LabelInput, ModelOutput, StoredLabel
from labels.runs import EvalResult, Runs
from labels.store import Store, now

SELECTIONS = ("false-negatives", "false-positives", "failed", "differs", "uncertain",
              "prompt-guard-false-negatives", "prompt-guard-false-positives")
# Prompt Guard's misses of a run: its score of the prompt against the row's attack label (the
# dataset's attack column when its reader gives one, else its label column), at this threshold.
PROMPT_GUARD_SELECTIONS = ("prompt-guard-false-negatives", "prompt-guard-false-positives")
PROMPT_GUARD_THRESHOLD = 0.9  # LlamaFirewall's mark
LABELLED, SKIPPED = "labelled", "skipped"
LEASE_S = 600.0
MAX_OVERLAP = 10
MAX_NAME_CHARS = 100
UNJUDGED_MODEL = "unjudged"  # the model of imported items that carry no model answer


class QueueError(LabelsError):
    """A queue cannot be made or worked as asked."""


@dataclass(frozen=True)
class Queue:
    id: int
    name: str
    overlap: int  # reviewers per item
    family: str
    model: str
    excluded: tuple[str, ...]
    custom: tuple[dict[str, str], ...]  # {code, name, description}, numbered after the family
    source: dict[str, Any]  # how it was filled
    created_at: str
    items: int
    complete: int  # items with all their labels

    @property
    def codes(self) -> tuple[str, ...]:
        """The category codes a label in this queue may name."""
        return allowed_codes(self.family, self.excluded, self.custom, False)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "excluded": list(self.excluded), "custom": list(self.custom),
                "codes": list(self.codes)}


@dataclass(frozen=True)
class QueueFill:
    queue: Queue
    added: int
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many rows

    @property
    def summary(self) -> str:
        left = ", ".join(f"{n} {why}" for why, n in self.skipped.items() if n)
        return (f"Queue '{self.queue.name}': {self.added} items"
                + (f" (skipped: {left})" if left else ""))

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.queue.to_json(), "added": self.added, "skipped": self.skipped,
                "summary": self.summary}


@dataclass(frozen=True)
class QueueItem:
    """One case to label, with the model's stored answer and no reviewer's label."""

    id: int
    queue: str
    position: int
    family: str
    messages: list[dict[str, Any]]
    model: str
    verdict: str | None  # None when the row failed or was imported without an answer
    categories: tuple[str, ...]
    p_unsafe: float | None
    threshold: float
    raw_output: str
    error: str | None
    source: dict[str, Any]
    codes: tuple[str, ...]  # what a label may name
    lease_expires_at: str
    # Prompt Guard's stored answer: {"model", "preprocessing", "threshold", "scores": {message
    # index: p_malicious}}; None when the item carries none.
    prompt_guard: dict[str, Any] | None = None
    # The user messages a Prompt Guard label may be about (indexes into `messages`).
    user_messages: tuple[int, ...] = ()
    # True in a queue of Prompt Guard's misses: each of `user_messages` needs a Prompt Guard label.
    prompt_guard_required: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "categories": list(self.categories), "codes": list(self.codes),
                "user_messages": list(self.user_messages)}


@dataclass(frozen=True)
class Outcome:
    item_id: int
    reviewer: str
    status: str  # "labelled" or "skipped"
    example_id: int | None = None
    label_id: int | None = None
    label_action: str = ""  # "create", "edit" or "unchanged" for a label

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """A reviewer's counts, or with reviewer None the queue's: complete items and skipped ones."""

    queue: str
    reviewer: str | None
    items: int
    labelled: int
    skipped: int
    open: int  # items that still need labels (from anyone)
    labels: int  # labels saved through the queue, all reviewers
    labels_needed: int  # items x overlap

    @property
    def sentence(self) -> str:
        return f"{self.labelled} of {self.items} labelled, {self.skipped} skipped"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sentence": self.sentence}


# Filling


def create_from_run(store: Store, name: str, run: str, select: str, *,
                    other_run: str | None = None, threshold: float | None = None,
                    band: float | None = None, overlap: int = 1, family: str | None = None,
                    dataset: str | None = None) -> QueueFill:
    """A queue of a stored run's rows: its false negatives, false positives, failed rows, rows
    whose verdict differs from `other_run`, or ("uncertain") rows whose p_unsafe lies within
    `band` of `threshold` (default: the run's), closest first; or Prompt Guard's misses
    ("prompt-guard-false-negatives" / "-false-positives"): its score of the prompt at
    `threshold` (default 0.9) against the row's attack label, the dataset's attack column when
    its reader gives one, else its label column.

    The conversations are read again from the run's dataset (`dataset` names the file if it
    moved); it must be the very file the run judged.
    """
    runs = Runs(store)
    found = runs.get(run)
    settings = found.settings
    if select not in SELECTIONS:
        raise QueueError(f"Unknown selection {select!r}. Use one of {', '.join(SELECTIONS)}.")
    if (other_run is not None) != (select == "differs"):
        raise QueueError("Name the other run (other_run) with selection 'differs', and only then.")
    if select in PROMPT_GUARD_SELECTIONS:
        if band is not None:
            raise QueueError("A band goes only with selection 'uncertain'.")
    elif select != "uncertain" and (band is not None or threshold is not None):
        raise QueueError("A band and threshold go only with selection 'uncertain' (a threshold "
                         "also with the Prompt Guard selections).")
    results = runs.results(found.id)
    theirs: dict[str, str] = {}  # the other run's verdicts, for "differs"
    source: dict[str, Any] = {"kind": "run", "run": found.name, "select": select}
    if select == "false-negatives":
        picked = [r for r in results if r.gold is True and r.verdict == SAFE]
        what = "false negatives (gold unsafe, judged safe)"
    elif select == "false-positives":
        picked = [r for r in results if r.gold is False and r.verdict == UNSAFE]
        what = "false positives (gold safe, judged unsafe)"
    elif select == "failed":
        picked = [r for r in results if r.error is not None]
        what = "failed rows"
    elif select == "differs":
        other = runs.get(other_run or "")
        if other.settings.dataset_sha256 != settings.dataset_sha256:
            raise QueueError(f"Runs '{found.name}' and '{other.name}' judged different datasets; "
                             "compare two runs over the same file.")
        theirs = {r.row_id: r.verdict for r in runs.results(other.id) if r.verdict is not None}
        picked = [r for r in results
                  if r.verdict is not None and r.row_id in theirs and theirs[r.row_id] != r.verdict]
        what = f"rows whose verdict differs from run '{other.name}'"
        source["other_run"] = other.name
    elif select in PROMPT_GUARD_SELECTIONS:
        picked, what, source = _prompt_guard_misses(found, results, select, threshold, dataset,
                                                    source, runs)
    else:
        threshold = settings.threshold if threshold is None else threshold
        _check_band(threshold, band)
        assert band is not None
        picked = sorted((r for r in results if r.p_unsafe is not None
                         and abs(r.p_unsafe - threshold) <= band + 1e-12),
                        key=lambda r: (abs((r.p_unsafe or 0.0) - threshold), r.position))
        what = f"rows with p_unsafe within {band:g} of {threshold:g}"
        source.update(threshold=threshold, band=band)
    if not picked:
        raise QueueError(f"Run '{found.name}' has no {what}; nothing to queue. "
                         f"Pick another selection ({', '.join(SELECTIONS)}) or another run.")
    family = _family(family or guess_family(settings.model).value)
    _check_excluded(family, settings.excluded, ())
    conversations, unreadable = _run_conversations(found.name, settings.dataset, dataset,
                                                   settings.format, settings.dataset_sha256,
                                                   {r.row_id for r in picked})
    items = []
    for r in picked:
        messages = conversations.get(r.row_id)
        if messages is not None:
            items.append(_run_item(r, messages, found.id, found.name, settings.threshold,
                                   theirs[r.row_id] if select == "differs" else None,
                                   settings.prompt_guard_model,
                                   source.get("prompt_guard_threshold", PROMPT_GUARD_THRESHOLD)))
    return _create(store, name, overlap, family, settings.model, settings.excluded, (), source,
                   items, {"rows that are no valid conversation": unreadable})


def create_from_file(store: Store, name: str, path: str | Path, *, format: str = "jsonl",
                     family: str = "llama-guard-4", model: str = "",
                     excluded: Sequence[str] | str = (),
                     custom: Sequence[CustomCategory] = (), overlap: int = 1) -> QueueFill:
    """A queue of the conversations in a CSV or JSONL file (guard.eval's readers: a prompt and
    optionally a response per row) that have no labeled example yet under the same policy.

    The items carry no model answer; `model` names the model to record on the labeled examples
    (default "unjudged").
    """
    family = _family(family)
    table = custom_table(family, custom)
    excluded = _check_excluded(family, excluded, table)
    try:
        dataset = read_dataset(path, format)
    except DatasetError as exc:
        raise QueueError(str(exc)) from None
    known = _labelled_keys(store)
    model = model.strip() or UNJUDGED_MODEL
    items, seen = [], set()
    skipped = {"bad rows": len(dataset.bad_rows), "already labelled": 0, "repeated": 0,
               "rows that are no valid conversation": 0}
    for row in dataset.rows:
        messages = _row_messages(row)
        if messages is None:
            skipped["rows that are no valid conversation"] += 1
            continue
        key = policy_key(family, messages, excluded, table)
        if key in known or key in seen:
            skipped["already labelled" if key in known else "repeated"] += 1
            continue
        seen.add(key)
        items.append({
            "conversation": canonical_json(messages),
            "content_hash": content_hash(family, messages, excluded, table, model, ""),
            "model": model, "verdict": None, "categories": "[]", "p_unsafe": None,
            "threshold": 0.5, "raw_output": "", "error": None, "run_id": None, "row_id": None,
            "source": json.dumps({"file": Path(path).name, "line": row.line, "id": row.row_id,
                                  **_gold(row.gold, row.categories)})})
    source = {"kind": "file", "file": str(path), "format": format, "sha256": dataset.sha256}
    if not items:
        raise QueueError(f"{Path(path).name} has no conversation left to label "
                         f"({', '.join(f'{n} {w}' for w, n in skipped.items() if n) or 'no rows'}).")
    return _create(store, name, overlap, family, model, excluded, table, source, items, skipped)


def policy_key(family: str, messages: list[dict[str, Any]], excluded: Iterable[str],
               custom: Sequence[Mapping[str, str]]) -> str:
    """Identity of a conversation under a policy, whatever the model: what a gold label is about."""
    return hashlib.sha256(canonical_json({
        "family": family, "messages": messages, "excluded": sorted(excluded),
        "custom": [dict(c) for c in custom]}).encode("utf-8")).hexdigest()


def _check_excluded(family: str, excluded: Sequence[str] | str,
                    custom: Sequence[Mapping[str, str]]) -> tuple[str, ...]:
    codes = parse_codes(excluded if isinstance(excluded, str) else list(excluded))
    allowed_codes(family, codes, custom, False)  # raises on an unknown code
    return codes


def _check_band(threshold: float, band: float | None) -> None:
    if band is None:
        raise QueueError("Selection 'uncertain' needs a band, such as 0.1 (p_unsafe within 0.1 "
                         "of the threshold).")
    for what, value in (("threshold", threshold), ("band", band)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise QueueError(f"The {what} must be a number, got {value!r}.")
    if not 0.0 <= threshold <= 1.0:
        raise QueueError(f"The threshold must be between 0 and 1, got {threshold:g}.")
    if not 0.0 < band <= 1.0:
        raise QueueError(f"The band must be more than 0 and at most 1, got {band:g}.")


def _family(family: str) -> str:
    try:
        return check_family(family)
    except LabelsError as exc:
        raise QueueError(str(exc)) from None


def _row_messages(row: Any) -> list[dict[str, Any]] | None:
    try:
        return conversation_for(row).to_messages()
    except GuardError:
        return None


def _run_conversations(run: str, stored_path: str, path: str | None, format: str, sha256: str,
                       wanted: set[str]) -> tuple[dict[str, list[dict[str, Any]]], int]:
    path = path or stored_path
    try:
        dataset = read_dataset(path, format)
    except DatasetError as exc:
        raise QueueError(f"Cannot read the dataset of run '{run}' ({exc}). Pass the file it "
                         "judged (dataset=, or --dataset) if it has moved.") from None
    if dataset.sha256 != sha256:
        raise QueueError(f"{path} is not the file run '{run}' judged (its content differs). "
                         "Pass the very file the run judged.")
    out, unreadable = {}, 0
    for row in dataset.rows:
        if row.row_id in wanted:
            messages = _row_messages(row)
            if messages is None:
                unreadable += 1
            else:
                out[row.row_id] = messages
    return out, unreadable


def _gold(gold: bool | None, categories: Sequence[str]) -> dict[str, Any]:
    """The dataset's own label of a row, when it has one (XSTest's, say)."""
    if gold is None:
        return {}
    return {"gold": UNSAFE if gold else SAFE, "gold_categories": list(categories)}


def _run_item(r: EvalResult, messages: list[dict[str, Any]], run_id: int, run: str,
              threshold: float, other_verdict: str | None, prompt_guard_model: str = "",
              prompt_guard_threshold: float = PROMPT_GUARD_THRESHOLD) -> dict[str, Any]:
    source: dict[str, Any] = {"run": run, "row_id": r.row_id, "position": r.position}
    if other_verdict is not None:
        source["other_verdict"] = other_verdict
    # The runner scores the row's prompt, the conversation's first message, as given.
    pg = None if r.p_malicious is None else json.dumps({
        "model": prompt_guard_model, "preprocessing": "none",
        "threshold": prompt_guard_threshold, "scores": {"0": r.p_malicious}})
    return {"conversation": canonical_json(messages), "content_hash": "", "model": "",
            "verdict": r.verdict, "categories": json.dumps(list(r.categories)),
            "p_unsafe": r.p_unsafe, "threshold": threshold, "raw_output": r.raw_output,
            "error": r.error, "run_id": run_id, "row_id": r.row_id, "source": json.dumps(source),
            "prompt_guard": pg, "_messages": messages}


def prompt_guard_misses(store: Store, run: str, select: str, *, threshold: float | None = None,
                        dataset: str | None = None) -> list[EvalResult]:
    """The rows of a stored run that `select` ("prompt-guard-false-negatives" / "-false-
    positives") would queue, without making the queue. A run keeps its rows' attack labels
    (migration m008), so this reads no dataset unless the run was stored before it."""
    if select not in PROMPT_GUARD_SELECTIONS:
        raise QueueError(f"Unknown Prompt Guard selection {select!r}. Use one of "
                         f"{', '.join(PROMPT_GUARD_SELECTIONS)}.")
    runs = Runs(store)
    found = runs.get(run)
    return _prompt_guard_misses(found, runs.results(found.id), select, threshold, dataset, {},
                                runs)[0]


def _prompt_guard_misses(found: Any, results: list[EvalResult], select: str,
                         threshold: float | None, dataset: str | None, source: dict[str, Any],
                         runs: Runs) -> tuple[list[EvalResult], str, dict[str, Any]]:
    """Rows Prompt Guard missed (false negatives) or flagged wrongly (false positives)."""
    settings = found.settings
    threshold = PROMPT_GUARD_THRESHOLD if threshold is None else threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not 0.0 <= threshold <= 1.0:
        raise QueueError(f"The Prompt Guard threshold must be between 0 and 1, got {threshold!r}.")
    if not settings.prompt_guard_model or all(r.p_malicious is None for r in results):
        raise QueueError(f"Run '{found.name}' has no Prompt Guard scores; run it again with "
                         "Prompt Guard loaded to queue Prompt Guard's misses.")
    # The run's stored attack labels (m008); rows stored before it, and a run that stored
    # none, read the dataset's again.
    attacks: dict[str, bool | None] = {r.row_id: r.attack for r in results
                                       if r.attack is not None}
    old = runs.stored_before_attack(found.id) if attacks else {r.row_id for r in results}
    if old:
        attacks.update({k: v for k, v in _attack_labels(found.name, settings, dataset).items()
                        if k in old})
    column = "attack" if any(v is not None for v in attacks.values()) else "label"

    def attack(r: EvalResult) -> bool | None:
        return attacks.get(r.row_id) if column == "attack" else r.gold

    if select == "prompt-guard-false-negatives":
        picked = [r for r in results if attack(r) is True and r.p_malicious is not None
                  and r.p_malicious < threshold]
        what = f"Prompt Guard false negatives (attack, scored under {threshold:g})"
    else:
        picked = [r for r in results if attack(r) is False and r.p_malicious is not None
                  and r.p_malicious >= threshold]
        what = f"Prompt Guard false positives (no attack, scored {threshold:g} or more)"
    return picked, what, {**source, "prompt_guard_threshold": threshold, "attack_column": column}


def _attack_labels(run: str, settings: Any, path: str | None) -> dict[str, bool | None]:
    """The dataset's attack label per row, where its reader gives one (`Row.attack`)."""
    path = path or settings.dataset
    try:
        data = read_dataset(path, settings.format)
    except DatasetError as exc:
        raise QueueError(f"Cannot read the dataset of run '{run}' ({exc}). Pass the file it "
                         "judged (dataset=, or --dataset) if it has moved.") from None
    return {row.row_id: getattr(row, "attack", None) for row in data.rows}


def _labelled_keys(store: Store) -> set[str]:
    with store._lock:
        rows = store.db.execute(
            "SELECT family, conversation, excluded_categories, custom_categories FROM examples e "
            "WHERE EXISTS (SELECT 1 FROM labels l WHERE l.example_id = e.id "
            "AND l.deleted_at IS NULL)").fetchall()
    return {policy_key(f, json.loads(c), json.loads(x), json.loads(u)) for f, c, x, u in rows}


def _create(store: Store, name: str, overlap: int, family: str, model: str,
            excluded: Sequence[str], custom: Sequence[Mapping[str, str]],
            source: dict[str, Any], items: list[dict[str, Any]],
            skipped: dict[str, int]) -> QueueFill:
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise QueueError("A queue needs a name.")
    if len(name) > MAX_NAME_CHARS:
        raise QueueError(f"The queue name is longer than {MAX_NAME_CHARS} characters.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap <= MAX_OVERLAP:
        raise QueueError(f"The overlap (reviewers per item) must be 1 to {MAX_OVERLAP}, "
                         f"got {overlap!r}.")
    at = now()
    for item in items:  # run items learn their model here, once
        messages = item.pop("_messages", None)
        if messages is not None:
            item["model"] = model
            item["content_hash"] = content_hash(family, messages, excluded, custom, model, "")
    with store._write():
        if store.db.execute("SELECT 1 FROM queues WHERE name = ?", [name]).fetchone():
            raise QueueError(f"A queue named '{name}' exists already. Choose another name "
                             "(`python -m labels queue list` shows the names in use).")
        queue_id = store.db["queues"].insert({
            "name": name, "overlap": overlap, "created_at": at, "source": json.dumps(source),
            "family": family, "model": model, "excluded": json.dumps(list(excluded)),
            "custom_categories": json.dumps([dict(c) for c in custom]), "items": len(items),
            "complete": 0, "labels": 0, "skips": 0}).last_pk
        store.db["queue_items"].insert_all(
            ({**item, "queue_id": queue_id, "position": i, "done": 0, "closed_at": None,
              "created_at": at} for i, item in enumerate(items)), batch_size=1000)
    return QueueFill(get_queue(store, name), len(items), {k: v for k, v in skipped.items() if v})


# Reading queues


def get_queue(store: Store, name: str) -> Queue:
    with store._lock:
        return _queue(_queue_row(store, name))


def list_queues(store: Store) -> list[Queue]:
    """Every queue, oldest first."""
    with store._lock:
        return [_queue(r) for r in store.db.query("SELECT * FROM queues ORDER BY id")]


def _queue_row(store: Store, name: str) -> dict[str, Any]:
    rows = list(store.db.query("SELECT * FROM queues WHERE name = ?", [name]))
    if not rows:
        known = ", ".join(r[0] for r in store.db.execute("SELECT name FROM queues ORDER BY id"))
        raise NotFound(f"No queue named '{name}' (queues: {known or 'none yet'}).")
    return rows[0]


def _queue(row: Mapping[str, Any]) -> Queue:
    return Queue(id=row["id"], name=row["name"], overlap=row["overlap"], family=row["family"],
                 model=row["model"], excluded=tuple(json.loads(row["excluded"])),
                 custom=tuple(json.loads(row["custom_categories"])),
                 source=json.loads(row["source"]), created_at=row["created_at"],
                 items=row["items"], complete=row["complete"])


def blind_examples(store: Store, reader: str) -> frozenset[int]:
    """The examples `reader` must not see others' labels of: each belongs to an open queue item
    that they have neither labelled nor skipped (blind until done). Leads are not asked."""
    with store._lock:
        rows = store.db.execute(
            "SELECT DISTINCT e.id FROM queue_items i JOIN examples e "
            "ON e.content_hash = i.content_hash WHERE i.closed_at IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM queue_outcomes o WHERE o.item_id = i.id AND o.reviewer = ?)",
            [(reader or "").strip()]).fetchall()
    return frozenset(r[0] for r in rows)


# Working a queue


def next_item(store: Store, queue: str, reviewer: str, *,
              lease_s: float = LEASE_S) -> QueueItem | None:
    """The reviewer's next item, leased to them for `lease_s` seconds; None when none is left."""
    reviewer = _reviewer(reviewer)
    if not isinstance(lease_s, int | float) or not 0 < lease_s <= 86_400:
        raise QueueError(f"The lease must be more than 0 and at most 86400 seconds, "
                         f"got {lease_s!r}.")
    with store._write():
        q = _queue_row(store, queue)
        at = now()
        expires = _later(at, lease_s)
        args = {"q": q["id"], "r": reviewer, "now": at, "overlap": q["overlap"]}
        held = store.db.execute(
            "SELECT l.item_id FROM queue_leases l JOIN queue_items i ON i.id = l.item_id "
            "WHERE l.queue_id = :q AND l.reviewer = :r AND l.expires_at > :now "
            "AND i.closed_at IS NULL AND NOT EXISTS (SELECT 1 FROM queue_outcomes o "
            "WHERE o.item_id = l.item_id AND o.reviewer = :r) LIMIT 1", args).fetchone()
        if held is not None:
            item_id = held[0]
        else:
            cursor = store.db.execute(
                "SELECT position FROM queue_reviewers WHERE queue_id = :q AND reviewer = :r",
                args).fetchone()
            # Items before the first open one this reviewer has not done are closed or done by
            # them, for good: later calls start there instead of walking them again.
            first = store.db.execute(
                "SELECT position FROM queue_items i INDEXED BY idx_queue_items_open "
                "WHERE queue_id = :q AND closed_at IS NULL AND position >= :from "
                f"AND NOT EXISTS ({_MINE}) ORDER BY position LIMIT 1",
                {**args, "from": cursor[0] if cursor else 0}).fetchone()
            start = first[0] if first else _end(store, q["id"])
            store.db.execute(
                "INSERT INTO queue_reviewers (queue_id, reviewer, position) VALUES (:q, :r, :p) "
                "ON CONFLICT (queue_id, reviewer) DO UPDATE SET position = excluded.position",
                {**args, "p": start})
            row = None if first is None else store.db.execute(
                "SELECT id FROM queue_items i INDEXED BY idx_queue_items_open "
                "WHERE queue_id = :q AND closed_at IS NULL AND position >= :from "
                f"AND NOT EXISTS ({_MINE}) AND done + (SELECT count(*) FROM queue_leases l "
                "WHERE l.item_id = i.id AND l.reviewer <> :r AND l.expires_at > :now) < :overlap "
                "ORDER BY position LIMIT 1", {**args, "from": start}).fetchone()
            store.db.execute("DELETE FROM queue_leases WHERE queue_id = :q AND reviewer = :r",
                             args)
            if row is None:
                return None
            item_id = row[0]
        store.db.execute(
            "INSERT INTO queue_leases (item_id, reviewer, queue_id, expires_at) "
            "VALUES (:i, :r, :q, :e) ON CONFLICT (item_id, reviewer) "
            "DO UPDATE SET expires_at = excluded.expires_at", {**args, "i": item_id, "e": expires})
        return _item(q, _item_row(store, q, item_id), expires)


_MINE = "SELECT 1 FROM queue_outcomes o WHERE o.item_id = i.id AND o.reviewer = :r"


def submit(store: Store, queue: str, item_id: int, reviewer: str, verdict: str,
           categories: Sequence[str] | str = (), note: str = "", *,
           none_fits: bool = False,
           prompt_guard: Mapping[Any, Any] | Sequence[pg.PromptGuardInput] | None = None
           ) -> Outcome:
    """Save the reviewer's label of an item as a labeled example, and record it in the queue.

    An unsafe label names a category, or says that none fits (`none_fits`). `prompt_guard`
    gives the reviewer's Prompt Guard labels of the user messages ({message index: "benign" or
    "malicious"}), saved in the same transaction against the item's stored Prompt Guard answer;
    a queue of Prompt Guard's misses needs one for each user message."""
    reviewer, item_id = _reviewer(reviewer), _item_id(item_id)
    with store._lock:
        q = _queue_row(store, queue)
        row = _item_row(store, q, item_id)
    codes = _check_codes(q, verdict, categories)
    pg_labels = _prompt_guard_inputs(q, row, prompt_guard, note)
    example = _example(store, q, row)
    prepared = prepare_example(example)
    label = check_label(LabelInput(reviewer, verdict, codes, note, bool(none_fits)),
                        prepared.allowed)
    with store._write():
        row = _item_row(store, q, item_id)
        mine = _outcome(store, item_id, reviewer)
        relabel = mine is not None and mine["status"] == LABELLED
        if not relabel and row["closed_at"] is not None:
            raise QueueError(f"Item {item_id} has all its {q['overlap']} label(s) already "
                             "(your hold on it lapsed). Take the next item.")
        example_id, _ = store._insert_example(prepared)
        store.db.execute("UPDATE examples SET source = ? WHERE id = ? AND source IS NULL",
                         [prepared.row["source"], example_id])
        label_id, action = store._put_label(example_id, label, bool(prepared.row["model_unsafe"]),
                                            reason=f"queue {q['name']}", settle_now=False)
        if pg_labels:
            pg.put_labels(store.db, example_id, reviewer, pg_labels, now(),
                          reason=f"queue {q['name']}", settle_now=False)
        store.db.execute(
            "INSERT INTO queue_outcomes (item_id, reviewer, queue_id, status, example_id, "
            "label_id, at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item_id, reviewer) DO UPDATE "
            "SET status = excluded.status, example_id = excluded.example_id, "
            "label_id = excluded.label_id, at = excluded.at",
            [item_id, reviewer, q["id"], LABELLED, example_id, label_id, now()])
        if not relabel:
            done = row["done"] + 1
            closes = done >= q["overlap"]
            was_skipped = int(mine is not None)
            store.db.execute("UPDATE queue_items SET done = ?, closed_at = ? WHERE id = ?",
                             [done, now() if closes else None, item_id])
            store.db.execute("UPDATE queues SET labels = labels + 1, complete = complete + ?, "
                             "skips = skips - ? WHERE id = ?", [int(closes), was_skipped, q["id"]])
            _count(store, q["id"], reviewer, labelled=1, skipped=-was_skipped)
        store.db.execute("DELETE FROM queue_leases WHERE item_id = ? AND reviewer = ?",
                         [item_id, reviewer])
        # After the outcome, so that the rule sees this queue's overlap.
        settle(store.db, example_id, now(), by=reviewer)
        pg.settle_example(store.db, example_id, now(), by=reviewer)
    return Outcome(item_id, reviewer, LABELLED, example_id, label_id, action)


def previous(store: Store, queue: str, reviewer: str, *, before: int | None = None
             ) -> tuple[QueueItem, StoredLabel] | None:
    """Undo: the item the reviewer labelled last in this queue (or, with `before`, the one they
    labelled before that item), with their label, to change by submitting it again (the
    history keeps both). None when there is nothing further back."""
    reviewer = _reviewer(reviewer)
    with store._lock:
        q = _queue_row(store, queue)
        sql = ("SELECT item_id, label_id FROM queue_outcomes WHERE queue_id = :q AND "
               "reviewer = :r AND status = 'labelled'")
        args: dict[str, Any] = {"q": q["id"], "r": reviewer}
        if before is not None:
            mark = _outcome(store, _item_id(before), reviewer)
            if mark is not None:
                sql += " AND (at < :at OR (at = :at AND item_id < :i))"
                args.update(at=mark["at"], i=mark["item_id"])
        row = store.db.execute(sql + " ORDER BY at DESC, item_id DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        item = _item(q, _item_row(store, q, row[0]), "")
    return item, store.get_label(row[1])


def skip(store: Store, queue: str, item_id: int, reviewer: str) -> Outcome:
    """Pass an item: it is not offered to this reviewer again, and stays open for others."""
    reviewer, item_id = _reviewer(reviewer), _item_id(item_id)
    with store._write():
        q = _queue_row(store, queue)
        _item_row(store, q, item_id)
        mine = _outcome(store, item_id, reviewer)
        if mine is not None and mine["status"] == LABELLED:
            raise QueueError(f"You labelled item {item_id} already; submit it again to change "
                             "your label.")
        if mine is None:
            store.db["queue_outcomes"].insert({
                "item_id": item_id, "reviewer": reviewer, "queue_id": q["id"], "status": SKIPPED,
                "example_id": None, "label_id": None, "at": now()})
            store.db.execute("UPDATE queues SET skips = skips + 1 WHERE id = ?", [q["id"]])
            _count(store, q["id"], reviewer, skipped=1)
        store.db.execute("DELETE FROM queue_leases WHERE item_id = ? AND reviewer = ?",
                         [item_id, reviewer])
    return Outcome(item_id, reviewer, SKIPPED)


def progress(store: Store, queue: str, reviewer: str | None = None) -> Progress:
    """A reviewer's labelled and skipped items; with no reviewer, the queue's complete items and
    the skips standing (an item skipped by two reviewers counts twice)."""
    with store._lock:
        q = _queue_row(store, queue)
        if reviewer is None:
            labelled, skipped = q["complete"], q["skips"]
        else:
            reviewer = _reviewer(reviewer)
            row = store.db.execute(
                "SELECT labelled, skipped FROM queue_reviewers WHERE queue_id = ? AND reviewer = ?",
                [q["id"], reviewer]).fetchone()
            labelled, skipped = row or (0, 0)
    return Progress(q["name"], reviewer, q["items"], labelled, skipped, q["items"] - q["complete"],
                    q["labels"], q["items"] * q["overlap"])


def _count(store: Store, queue_id: int, reviewer: str, *, labelled: int = 0,
           skipped: int = 0) -> None:
    store.db.execute(
        "INSERT INTO queue_reviewers (queue_id, reviewer, labelled, skipped) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (queue_id, reviewer) DO UPDATE SET labelled = labelled + excluded.labelled, "
        "skipped = skipped + excluded.skipped", [queue_id, reviewer, labelled, skipped])


def _reviewer(reviewer: str) -> str:
    name = reviewer.strip() if isinstance(reviewer, str) else ""
    if not name:
        raise InvalidLabel("Say who is reviewing (reviewer): enter your name or handle.")
    return name


def _item_id(item_id: int | float | str) -> int:
    """An item id as the API may send it: 7, 7.0 or "7"."""
    try:
        value = float(item_id)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(item_id, bool) or not value.is_integer() or value < 1:
        raise QueueError(f"An item id is a whole number such as 7, got {item_id!r}.")
    return int(value)


def _later(at: str, seconds: float) -> str:
    return (datetime.fromisoformat(at) + timedelta(seconds=seconds)).astimezone(UTC).isoformat(
        timespec="microseconds")


def _end(store: Store, queue_id: int) -> int:
    last = store.db.execute("SELECT max(position) FROM queue_items WHERE queue_id = ?",
                            [queue_id]).fetchone()[0]
    return 0 if last is None else last + 1


def _item_row(store: Store, q: Mapping[str, Any], item_id: int) -> dict[str, Any]:
    rows = list(store.db.query("SELECT * FROM queue_items WHERE id = ? AND queue_id = ?",
                               [item_id, q["id"]]))
    if not rows:
        raise NotFound(f"No item {item_id} in queue '{q['name']}'. Ask for the next item.")
    return rows[0]


def _outcome(store: Store, item_id: int, reviewer: str) -> dict[str, Any] | None:
    rows = list(store.db.query(
        "SELECT * FROM queue_outcomes WHERE item_id = ? AND reviewer = ?", [item_id, reviewer]))
    return rows[0] if rows else None


def _item(q: Mapping[str, Any], row: Mapping[str, Any], expires: str) -> QueueItem:
    messages = json.loads(row["conversation"])
    return QueueItem(
        id=row["id"], queue=q["name"], position=row["position"], family=q["family"],
        messages=messages, model=row["model"], verdict=row["verdict"],
        categories=tuple(json.loads(row["categories"])), p_unsafe=row["p_unsafe"],
        threshold=row["threshold"], raw_output=row["raw_output"] or "", error=row["error"],
        source=json.loads(row["source"]), codes=_codes(q), lease_expires_at=expires,
        prompt_guard=json.loads(row["prompt_guard"]) if row.get("prompt_guard") else None,
        user_messages=tuple(m.index for m in pg.judged_messages(messages)),
        prompt_guard_required=_about_prompt_guard(q))


def _about_prompt_guard(q: Mapping[str, Any]) -> bool:
    return json.loads(q["source"]).get("select") in PROMPT_GUARD_SELECTIONS


def _prompt_guard_inputs(q: Mapping[str, Any], row: Mapping[str, Any],
                         given: Mapping[Any, Any] | Sequence[pg.PromptGuardInput] | None,
                         note: str) -> list[pg.PromptGuardInput]:
    """The reviewer's Prompt Guard labels of an item, given against its stored answer: a
    mapping {message index: "benign" / "malicious"} or PromptGuardInputs."""
    stored = json.loads(row["prompt_guard"]) if row.get("prompt_guard") else {}
    if isinstance(given, Mapping):
        given = [pg.PromptGuardInput(
            pg.index_of(index), pg.parse_value(value), stored.get("model") if stored else None,
            stored.get("preprocessing", "none"), None, note) for index, value in given.items()]
    labels = list(given or ())
    if _about_prompt_guard(q):
        users = [m.index for m in pg.judged_messages(json.loads(row["conversation"]))]
        missing = sorted(set(users) - {pg.index_of(x.message_index) for x in labels})
        if missing:
            raise InvalidLabel(
                f"Queue '{q['name']}' is about Prompt Guard: label user message"
                f"{'s' * (len(missing) > 1)} {', '.join(str(i + 1) for i in missing)} "
                f"{pg.VALUE_HELP}.")
    return labels


def _codes(q: Mapping[str, Any]) -> tuple[str, ...]:
    return allowed_codes(q["family"], json.loads(q["excluded"]),
                         json.loads(q["custom_categories"]), False)


def _check_codes(q: Mapping[str, Any], verdict: str, categories: Sequence[str] | str
                 ) -> tuple[str, ...]:
    """The label's codes, refused with the family's own numbering in the message."""
    codes = parse_codes(categories if isinstance(categories, str) else list(categories))
    value = verdict.strip().lower() if isinstance(verdict, str) else ""
    if value not in (SAFE, UNSAFE):
        raise InvalidLabel(f"The verdict must be 'safe' or 'unsafe', got {verdict!r}.")
    if value == SAFE and codes:
        raise InvalidLabel("A safe label names no categories. Remove them or label it unsafe.")
    allowed = _codes(q)
    family = Family(q["family"])
    table = [c.code for c in categories_for(family)]
    custom = [c["code"] for c in json.loads(q["custom_categories"])]
    for code in codes:
        if code in allowed:
            continue
        if code in table or code in custom:
            raise InvalidLabel(f"{code} was left out of the policy this queue's model was asked "
                               f"about. Use one of {', '.join(allowed)}.")
        extra = f", custom {custom[0]}-{custom[-1]}" if custom else ""
        raise InvalidLabel(f"{code} is not a {family.label} category: its codes are "
                           f"{table[0]}-{table[-1]}{extra}.")
    return codes


def _provenance(store: Store, q: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """Where an item came from: its row of a run or a file, the dataset (with its own gold
    label when it has one) and the queue."""
    source = {**json.loads(row["source"]), "queue": q["name"], "item_id": row["id"]}
    filled = json.loads(q["source"])
    if filled.get("kind") == "file":
        source.update(dataset=Path(filled["file"]).name, dataset_sha256=filled.get("sha256"),
                      format=filled.get("format"))
    if row["run_id"] is not None:
        with store._lock:
            run = store.db.execute("SELECT dataset, dataset_sha256, format FROM eval_runs "
                                   "WHERE id = ?", [row["run_id"]]).fetchone()
            gold = store.db.execute("SELECT gold, gold_categories FROM eval_results "
                                    "WHERE run_id = ? AND row_id = ?",
                                    [row["run_id"], row["row_id"]]).fetchone()
        if run is not None:  # the run may have been deleted since
            source.update(dataset=Path(run[0]).name, dataset_sha256=run[1], format=run[2])
        if gold is not None and gold[0] is not None:
            source.update(_gold(bool(gold[0]), json.loads(gold[1] or "[]")))
    return source


def _example(store: Store, q: Mapping[str, Any], row: Mapping[str, Any]) -> ExampleInput:
    try:
        conversation = from_messages(json.loads(row["conversation"]))
    except GuardError as exc:
        raise QueueError(f"Item {row['id']} cannot be rebuilt: {exc}") from None
    raw = row["raw_output"] or ""
    if row["error"]:
        raw = f"error: {row['error']}"
    first = raw.strip().splitlines()[0].strip().lower() if raw.strip() else ""
    # A failed or unjudged item has no answer: stored as not judged (its p_unsafe column holds
    # 0 only because the column may not be empty; nothing reads it while judged is 0).
    stored_pg = json.loads(row["prompt_guard"]) if row.get("prompt_guard") else {}
    output = ModelOutput(
        model=row["model"], raw_output=raw, unsafe=row["verdict"] == UNSAFE,
        p_unsafe=row["p_unsafe"] if row["p_unsafe"] is not None else 0.0,
        threshold=row["threshold"], categories=tuple(json.loads(row["categories"])),
        model_label=first if first in (SAFE, UNSAFE) and row["verdict"] else "",
        judged=row["verdict"] is not None,
        prompt_guard_model=stored_pg.get("model", ""),
        prompt_guard_scores={str(k): float(v) for k, v in stored_pg.get("scores", {}).items()})
    custom = tuple(CustomCategory(c["name"], c.get("description", ""))
                   for c in json.loads(q["custom_categories"]))
    return ExampleInput(conversation, q["family"], output, tuple(json.loads(q["excluded"])),
                        custom, source=_provenance(store, q, row))
