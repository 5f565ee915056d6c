"""Concurrent saves, a process killed mid-save, and a database from the previous schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlite_utils import Database
from test_labels_helpers import counts, example, image, integrity, label

from labels import ExampleFilter, Store
from labels.schema import migrations

REPO = Path(__file__).resolve().parent.parent


def test_eight_threads_hundred_saves_each(tmp_path):
    path = tmp_path / "labels.db"
    stores = [Store(path), Store(path)]  # two connections, as two app processes would have
    palette = [image((i * 40, 0, 0)) for i in range(4)]
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        store = stores[thread % 2]
        try:
            for i in range(100):
                ex = example(f"thread {thread} message {i}", (palette[i % 4],))
                store.save_example(ex, label(f"reviewer{thread}"))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    assert errors == []
    assert counts(path) == {"examples": 800, "images": 4, "example_images": 800, "labels": 800,
                            "label_events": 800}
    with Store(path) as store:
        texts = sorted(s.preview for s in store.list_examples(ExampleFilter(limit=1000)))
    assert texts == sorted(f"thread {t} message {i}" for t in range(8) for i in range(100))
    assert integrity(path) == "ok"


WRITER = """
import sys
from test_labels_helpers import example, image, label
from labels import Store
store = Store(sys.argv[1])
images = (image((255, 0, 0), (64, 64)), image((0, 255, 0), (64, 64)))
for i in range(100_000):
    saved = store.save_example(example(f"message {i}", images), label(note="n" * 500))
    print(saved.example_id, flush=True)
"""


def test_killed_writer_leaves_complete_examples(tmp_path):
    path = tmp_path / "labels.db"
    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    for seen, _ in enumerate(proc.stdout, start=1):
        if seen == 30:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert integrity(path) == "ok"
    with Store(path) as store:
        n = store.count_examples()
        assert n >= 30
        for summary in store.list_examples(ExampleFilter(limit=1000)):
            stored = store.get_example(summary.id)
            assert (len(stored.conversation.images), len(stored.labels)) == (2, 1)
        assert len(store.label_history(n)) == 1
    assert counts(path) == {"examples": n, "images": 2, "example_images": 2 * n, "labels": n,
                            "label_events": n}


def test_database_from_schema_version_one_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    db = Database(path)
    migrations.apply(db, stop_before="m002_search")
    messages = [{"role": "user", "content": [{"type": "text", "text": "old question"}]}]
    db["examples"].insert({
        "id": 1, "created_at": "2025-01-01T00:00:00+00:00", "content_hash": "abc",
        "family": "llama-guard-4", "conversation": json.dumps(messages),
        "excluded_categories": "[]", "custom_categories": "[]", "prompt": "PROMPT",
        "image_count": 0, "model": "m", "model_revision": "", "raw_output": "safe",
        "model_label": "safe", "model_unsafe": 0, "model_categories": "[]", "p_unsafe": 0.1,
        "threshold": 0.5, "prompt_guard_model": "", "prompt_guard_revision": "",
        "prompt_guard_scores": "{}"})
    db["labels"].insert({
        "id": 1, "example_id": 1, "reviewer": "alice", "label": "safe", "categories": "[]",
        "note": "old note", "model_was_right": 1, "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00", "deleted_at": None})
    assert "conversation_text" not in db["examples"].columns_dict
    db.close()

    with Store(path) as store:
        assert [m.name for m in migrations.applied(store.db)][:4] == [
            "m001_initial", "m002_search", "m003_eval_runs", "m004_review_queues"]
        assert "eval_runs" in store.db.table_names()
        assert store.db["examples"].columns_dict["conversation_text"] is str
        stored = store.get_example(1)
        assert (stored.prompt, stored.conversation.turns[0].text, stored.labels[0].note) == (
            "PROMPT", "old question", "old note")
        assert [s.id for s in store.list_examples(ExampleFilter(text="question"))] == [1]
        assert [s.id for s in store.list_examples(ExampleFilter(text="note"))] == [1]
        store.save_example(example("new question"), label())
        assert [s.id for s in store.list_examples(ExampleFilter(text="question"))] == [2, 1]
    assert integrity(path) == "ok"
