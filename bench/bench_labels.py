"""Label store benchmark: saving examples with five images, and metrics over 100,000 labels.

Prints one `NAME: ratio=X.XX` line per comparison (ours divided by a baseline measured side by
side in this process; below 1 means ours is faster or smaller), then details.

    python bench/bench_labels.py
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard.core.conversation import Conversation, Turn  # noqa: E402
from labels import ExampleInput, LabelInput, ModelOutput, Store  # noqa: E402
from labels.metrics import (  # noqa: E402
    average_precision,
    category_rates,
    confusion,
    f1,
    false_positive_rate,
    precision,
    precision_recall_curve,
    recall,
)
from labels.records import MetricInputs  # noqa: E402

SAVES = 40
LABELS = 100_000
CODES = tuple(f"S{i}" for i in range(1, 15))


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def images(seed: int) -> tuple[Image.Image, ...]:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 384, dtype=np.uint8)[None, :, None].repeat(384, 0).repeat(3, 2)
    return tuple(Image.fromarray(base // 2 + rng.integers(0, 64, base.shape, dtype=np.uint8))
                 for _ in range(5))


def example(i: int, pictures: tuple[Image.Image, ...]) -> ExampleInput:
    conversation = Conversation.build([Turn("user", f"What is in these pictures? ({i})", pictures)])
    output = ModelOutput("meta-llama/Llama-Guard-4-12B", "safe", False, 0.02, 0.5, (), "safe")
    return ExampleInput(conversation, "llama-guard-4", output)


def naive_save(db, ex: ExampleInput) -> None:
    """Baseline: the same example with its PNGs inline, no content addressing, one transaction."""
    blobs = []
    for picture in ex.conversation.images:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    with db.conn:
        cursor = db.conn.execute(
            "INSERT INTO naive (conversation, model, p_unsafe) VALUES (?, ?, ?)",
            [json.dumps(ex.conversation.to_messages()), ex.output.model, ex.output.p_unsafe])
        db.conn.executemany("INSERT INTO naive_images (example_id, position, png) VALUES (?, ?, ?)",
                            [(cursor.lastrowid, i, b) for i, b in enumerate(blobs)])
        db.conn.execute("INSERT INTO naive_labels (example_id, reviewer, label) VALUES (?, ?, ?)",
                        [cursor.lastrowid, "bench", "safe"])


def bench_saves(tmp: Path) -> list[str]:
    from sqlite_utils import Database

    pictures = images(0)
    label = LabelInput("bench", "safe")
    store = Store(tmp / "ours.db")
    naive = Database(tmp / "naive.db")
    naive.enable_wal()
    naive.execute("CREATE TABLE naive (id INTEGER PRIMARY KEY, conversation TEXT, model TEXT, "
                  "p_unsafe REAL)")
    naive.execute("CREATE TABLE naive_images (example_id INTEGER, position INTEGER, png BLOB)")
    naive.execute("CREATE TABLE naive_labels (example_id INTEGER, reviewer TEXT, label TEXT)")
    ours_times, naive_times = [], []
    for i in range(SAVES):  # interleaved so both see the same machine state
        ex = example(i, pictures)
        start = time.perf_counter()
        store.save_example(ex, label)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        naive_save(naive, ex)
        naive_times.append(time.perf_counter() - start)
    store.close()
    with Store(tmp / "fresh.db") as fresh:
        first_new = timed(lambda: fresh.save_example(example(0, images(1)), label), repeat=1)
    naive.close()
    ours_size = _size(tmp / "ours.db")
    naive_size = _size(tmp / "naive.db")
    ours_t, naive_t = statistics.median(ours_times), statistics.median(naive_times)
    return [
        f"save_example_5_images: ratio={ours_t / naive_t:.2f}",
        f"db_bytes_per_example_shared_images: ratio={ours_size / naive_size:.2f}",
        f"  save with 5 images (384x384), median of {SAVES}: ours {ours_t * 1e3:.1f} ms "
        f"(content-addressed, validated, prompt rendered, label + audit event), "
        f"naive inline insert {naive_t * 1e3:.1f} ms",
        f"  save with 5 new images (nothing to dedupe): {first_new * 1e3:.1f} ms",
        f"  database size per example, {SAVES} examples reusing the same 5 images: "
        f"ours {ours_size / SAVES / 1024:.1f} KiB, naive {naive_size / SAVES / 1024:.1f} KiB",
    ]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def metric_inputs(n: int) -> MetricInputs:
    rng = np.random.default_rng(0)
    y_true = rng.random(n) < 0.3
    scores = np.round(np.clip(y_true * 0.35 + rng.random(n) * 0.65, 0, 1), 4)
    y_pred = scores >= 0.5
    gold = tuple(frozenset({CODES[int(k)]}) if t else frozenset()
                 for t, k in zip(y_true, rng.integers(0, 14, n), strict=True))
    pred = tuple(frozenset({CODES[int(k)]}) if p else frozenset()
                 for p, k in zip(y_pred, rng.integers(0, 14, n), strict=True))
    return MetricInputs(tuple(y_true), tuple(y_pred), tuple(scores), gold, pred, CODES)


def bench_metrics() -> list[str]:
    from sklearn import metrics as sk
    from sklearn.preprocessing import MultiLabelBinarizer

    inputs = metric_inputs(LABELS)
    y, p, s = (np.asarray(inputs.y_true), np.asarray(inputs.y_pred),
               np.asarray(inputs.scores))

    def ours() -> None:
        c = confusion(y, p)
        precision(c), recall(c), f1(c), false_positive_rate(c)
        average_precision(y, s)
        precision_recall_curve(y, s)

    def sklearn() -> None:
        sk.confusion_matrix(y, p)
        sk.precision_score(y, p), sk.recall_score(y, p), sk.f1_score(y, p)
        sk.average_precision_score(y, s)
        sk.precision_recall_curve(y, s)

    def ours_categories() -> None:
        category_rates(inputs.gold_categories, inputs.pred_categories, CODES)

    def sklearn_categories() -> None:
        binarizer = MultiLabelBinarizer(classes=list(CODES))
        sk.multilabel_confusion_matrix(binarizer.fit_transform(inputs.gold_categories),
                                       binarizer.fit_transform(inputs.pred_categories))

    ours(), sklearn(), ours_categories(), sklearn_categories()  # warm up
    t_ours, t_sk = timed(ours), timed(sklearn)
    c_ours, c_sk = timed(ours_categories), timed(sklearn_categories)
    return [
        f"metrics_100k_labels: ratio={t_ours / t_sk:.2f}",
        f"category_rates_100k_labels: ratio={c_ours / c_sk:.2f}",
        f"  precision, recall, F1, FPR, AUPRC, PR curve over {LABELS:,} labels: "
        f"ours {t_ours * 1e3:.1f} ms, scikit-learn {t_sk * 1e3:.1f} ms",
        f"  per-category FNR/FPR over 14 categories: ours {c_ours * 1e3:.1f} ms, "
        f"scikit-learn multilabel_confusion_matrix {c_sk * 1e3:.1f} ms",
    ]


def bench_store_metrics(tmp: Path) -> list[str]:
    """metric_inputs() from a database holding 100,000 labels, then evaluate()."""
    from labels.metrics import evaluate

    store = Store(tmp / "many.db")
    inputs = metric_inputs(LABELS)
    # Setup only: bulk rows written straight into the schema; timing covers the read path.
    with store.db.conn:
        store.db.conn.executemany(
            "INSERT INTO examples (id, created_at, content_hash, family, conversation, prompt, "
            "image_count, model, model_unsafe, model_categories, p_unsafe, threshold, "
            "excluded_categories, custom_categories) VALUES (?, '2025-01-01', ?, "
            "'llama-guard-4', '[]', '', 0, 'm', ?, ?, ?, 0.5, '[]', '[]')",
            [(i + 1, str(i), int(p), json.dumps(sorted(c)), sc) for i, (p, c, sc) in enumerate(
                zip(inputs.y_pred, inputs.pred_categories, inputs.scores, strict=True))])
        store.db.conn.executemany(
            "INSERT INTO labels (example_id, reviewer, label, categories, note, model_was_right, "
            "created_at, updated_at) VALUES (?, 'r', ?, ?, '', 1, '2025', '2025')",
            [(i + 1, "unsafe" if t else "safe", json.dumps(sorted(c))) for i, (t, c) in
             enumerate(zip(inputs.y_true, inputs.gold_categories, strict=True))])
    # Every label (the rows above are written without the final labels the store settles).
    load = timed(lambda: store.metric_inputs(labels="all"), repeat=3)
    n = len(store.metric_inputs(labels="all").y_true)
    compute = timed(lambda: evaluate(store.metric_inputs(labels="all")), repeat=3)
    store.close()
    return [f"  store.metric_inputs() over {n:,} labels: {load * 1e3:.0f} ms; "
            f"metric_inputs() then evaluate() (every metric + suggested threshold): "
            f"{compute * 1e3:.0f} ms"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        saves = bench_saves(Path(tmp))
        metrics = bench_metrics()
        store_metrics = bench_store_metrics(Path(tmp))
    lines = saves[:2] + metrics[:2] + saves[2:] + metrics[2:] + store_metrics
    print("\n".join(lines))


if __name__ == "__main__":
    main()
