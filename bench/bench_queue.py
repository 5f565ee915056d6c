"""Review queue benchmark: `next_item` over 100,000 queued items, overlap 2, many already labelled.

Prints `queue_next_100k_items: ratio=X.XX` first (ours divided by a baseline measured side by
side in this process; below 1 means ours is faster), then details. The baseline is the plain
query a queue could start with: a random item the reviewer has not labelled,
`SELECT ... WHERE id NOT IN (labelled by R) ORDER BY random() LIMIT 1`, on the same rows in a
database of its own. It knows nothing of overlap or leases; ours also writes the lease.

    python bench/bench_queue.py
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report  # noqa: E402
from labels import Store  # noqa: E402
from labels import queues as q  # noqa: E402

ITEMS = 100_000
CALLS = 200  # next_item calls per side
REVIEWERS = ("alice", "bob", "carol", "dave")
# Already done before timing: alice the first 30,000, bob the first 10,000 (so those are
# complete), carol 5,000 scattered over the rest; dave has done nothing.
ALICE, BOB, CAROL = 30_000, 10_000, 5_000
MODEL = "meta-llama/Llama-Guard-4-12B"


def conversation(i: int) -> str:
    return json.dumps([{"content": [{"text": f"case {i}: how do I do thing {i}?",
                                     "type": "text"}], "role": "user"}], separators=(",", ":"))


def done_before(rng: random.Random) -> list[tuple[int, str]]:
    carol = rng.sample(range(ALICE, ITEMS), CAROL)
    return ([(i, "alice") for i in range(ALICE)] + [(i, "bob") for i in range(BOB)]
            + [(i, "carol") for i in carol])


def fill_ours(store: Store, done: list[tuple[int, str]]) -> None:
    """Setup only: rows written straight into the schema; timing covers next_item alone."""
    at = "2025-01-01T00:00:00+00:00"
    counts = [0] * ITEMS
    per_reviewer: dict[str, int] = {}
    for position, reviewer in done:
        counts[position] += 1
        per_reviewer[reviewer] = per_reviewer.get(reviewer, 0) + 1
    with store.db.conn:
        queue_id = store.db.execute(
            "INSERT INTO queues (name, overlap, created_at, source, family, model, excluded, "
            "custom_categories, items, complete, labels, skips) "
            "VALUES ('bench', 2, ?, '{}', 'llama-guard-4', ?, '[]', '[]', ?, ?, ?, 0)",
            [at, MODEL, ITEMS, sum(c >= 2 for c in counts), len(done)]).lastrowid
        store.db.conn.executemany(
            "INSERT INTO queue_reviewers (queue_id, reviewer, labelled) VALUES (?, ?, ?)",
            [(queue_id, r, n) for r, n in per_reviewer.items()])
        store.db.conn.executemany(
            "INSERT INTO queue_items (id, queue_id, position, conversation, content_hash, model, "
            "verdict, categories, p_unsafe, threshold, raw_output, source, done, closed_at, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, 'safe', '[]', ?, 0.5, 'safe', '{}', ?, ?, ?)",
            [(i + 1, queue_id, i, conversation(i), hashlib.sha256(str(i).encode()).hexdigest(),
              MODEL, (i % 97) / 97, counts[i], at if counts[i] >= 2 else None, at)
             for i in range(ITEMS)])
        store.db.conn.executemany(
            "INSERT INTO queue_outcomes (item_id, reviewer, queue_id, status, at) "
            "VALUES (?, ?, ?, 'labelled', ?)", [(p + 1, r, queue_id, at) for p, r in done])


def fill_baseline(path: Path, done: list[tuple[int, str]]):
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, conversation TEXT, model TEXT, "
                 "verdict TEXT, p_unsafe REAL)")
    conn.execute("CREATE TABLE labelled (item_id INTEGER, reviewer TEXT)")
    conn.execute("CREATE INDEX labelled_by ON labelled (reviewer, item_id)")
    with conn:
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, 'safe', ?)",
                         [(i + 1, conversation(i), MODEL, (i % 97) / 97) for i in range(ITEMS)])
        conn.executemany("INSERT INTO labelled VALUES (?, ?)", [(p + 1, r) for p, r in done])
    return conn


BASELINE = ("SELECT id, conversation, model, verdict, p_unsafe FROM items WHERE id NOT IN "
            "(SELECT item_id FROM labelled WHERE reviewer = ?) ORDER BY random() LIMIT 1")


def main() -> None:
    rng = random.Random(0)
    done = done_before(rng)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "queue.db")
        fill_ours(store, done)
        base = fill_baseline(Path(tmp) / "baseline.db", done)

        def ours(reviewer: str) -> q.QueueItem:
            item = q.next_item(store, "bench", reviewer)
            assert item is not None
            return item

        first = {}
        for reviewer in REVIEWERS:  # a reviewer's first call finds their place in the queue
            start = time.perf_counter()
            item = ours(reviewer)
            first[reviewer] = (time.perf_counter() - start, item.position)
            q.skip(store, "bench", item.id, reviewer)
            row = base.execute(BASELINE, [reviewer]).fetchone()
            with base:
                base.execute("INSERT INTO labelled VALUES (?, ?)", [row[0], reviewer])
        t_ours = t_base = 0.0
        submitted = 0
        for i in range(CALLS):
            reviewer = REVIEWERS[i % len(REVIEWERS)]
            start = time.perf_counter()
            if i % 2 == 0:
                item = ours(reviewer)
                middle = time.perf_counter()
                row = base.execute(BASELINE, [reviewer]).fetchone()
                end = time.perf_counter()
                t_ours, t_base = t_ours + middle - start, t_base + end - middle
            else:
                row = base.execute(BASELINE, [reviewer]).fetchone()
                middle = time.perf_counter()
                item = ours(reviewer)
                end = time.perf_counter()
                t_base, t_ours = t_base + middle - start, t_ours + end - middle
            # Untimed: the reviewer answers, so the next call has to find a new item.
            if i % 5 == 0:
                q.submit(store, "bench", item.id, reviewer, "safe")
                submitted += 1
            else:
                q.skip(store, "bench", item.id, reviewer)
            with base:
                base.execute("INSERT INTO labelled VALUES (?, ?)", [row[0], reviewer])
        start = time.perf_counter()
        progress = q.progress(store, "bench", "alice")
        t_progress = time.perf_counter() - start
        store.close()
        base.close()
    report("queue_next_100k_items", t_ours, t_base, CALLS,
           f"{ITEMS:,} items, overlap 2, {len(done):,} labels already in, {len(REVIEWERS)} "
           f"reviewers in turn; after each call the reviewer skips the item ({submitted} of "
           f"{CALLS} labelled through submit), untimed")
    lines = [f"  first call of {r}: {s * 1e3:.1f} ms (item at position {p:,})"
             for r, (s, p) in first.items()]
    lines += [f"  alice is {ALICE - BOB:,} items ahead of bob: her first call walks them once; "
              "the cursor it leaves makes later calls start at her next item",
              f"  progress(alice) over {ITEMS:,} items: {t_progress * 1e3:.1f} ms "
              f"({progress.sentence})"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
