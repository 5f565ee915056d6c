"""Exports load with `datasets` (images decode), the fine-tuning format, idempotent import."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from test_labels_helpers import counts, example, image, label

from guard.core.prompts import CustomCategory
from labels import ImportFailed, ImportResult, Store
from labels.export import export_jsonl, export_llama_guard, export_parquet, import_jsonl

RED, BLUE = image((255, 0, 0), (9, 7)), image((0, 0, 255), (5, 5))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "source.db"


@pytest.fixture
def store(store):
    """The shared store with two examples: two images and two reviewers; a custom category."""
    store.save_example(example("Look at this", (RED, BLUE), reply="Nice picture",
                               scores={"malicious": 0.25}),
                       label("alice", "unsafe", ("S1", "S2"), "two images"))
    store.add_label(1, label("bob", "safe", ()))
    store.save_example(example("hello", unsafe=False, p_unsafe=0.01, categories=(),
                               excluded=("S5",),
                               custom=(CustomCategory("Rivals", "Names a competitor."),)),
                       label("alice", "unsafe", ("S15",)))
    return store


def load(kind: str, path: Path, cache: Path):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(cache))


def test_parquet_loads_with_datasets_and_images_decode(store, tmp_path):
    out = tmp_path / "out.parquet"
    assert export_parquet(store, out) == 2
    ds = load("parquet", out, tmp_path / "cache")
    assert ds.num_rows == 2
    assert type(ds.features["images"]).__name__ in ("List", "Sequence", "list")
    first = ds[0]
    assert [(i.size, i.getpixel((0, 0))) for i in first["images"]] == [
        ((9, 7), (255, 0, 0)), ((5, 5), (0, 0, 255))]
    assert first["messages"][0]["content"][1]["path"] == first["image_sha256"][0]
    assert [(lb["reviewer"], lb["label"], lb["categories"]) for lb in first["labels"]] == [
        ("alice", "unsafe", ["S1", "S2"]), ("bob", "safe", [])]
    assert first["prompt_guard_scores"] == [{"label": "malicious", "score": 0.25}]
    assert ds[1]["custom_categories"] == [
        {"code": "S15", "name": "Rivals", "description": "Names a competitor."}]
    assert ds[1]["images"] == []


def test_jsonl_loads_with_datasets_and_images_decode(store, tmp_path):
    from PIL import Image

    out = tmp_path / "out.jsonl"
    assert export_jsonl(store, out) == 2
    ds = load("json", out, tmp_path / "cache")
    assert (ds.num_rows, ds[0]["prompt"]) == (2, store.get_example(1).prompt)
    decoded = [Image.open(__import__("io").BytesIO(base64.b64decode(i["png_base64"])))
               for i in ds[0]["images"]]
    assert [(i.size, i.convert("RGB").getpixel((0, 0))) for i in decoded] == [
        ((9, 7), (255, 0, 0)), ((5, 5), (0, 0, 255))]
    assert ds[1]["excluded_categories"] == ["S5"]


def test_llama_guard_format(store, tmp_path):
    out = tmp_path / "train.jsonl"
    # Example 1's reviewers disagree: no final label, so no row (never one per reviewer).
    assert export_llama_guard(store, out) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    prompt_1, prompt_2 = store.get_example(1).prompt, store.get_example(2).prompt
    assert [(r["prompt"], r["target"], r["example_id"]) for r in rows] == [
        (prompt_2, "unsafe\nS15", 2)]
    assert export_llama_guard(store, out, labels="reviewer:bob") == 1
    assert [json.loads(line)["target"] for line in out.read_text().splitlines()] == ["safe"]
    assert export_llama_guard(store, out, labels="reviewer:alice") == 2
    assert [(json.loads(line)["prompt"], json.loads(line)["target"])
            for line in out.read_text().splitlines()] == [
        (prompt_1, "unsafe\nS1,S2"), (prompt_2, "unsafe\nS15")]


def test_import_twice_adds_nothing(store, tmp_path):
    out = tmp_path / "out.jsonl"
    export_jsonl(store, out)
    target_path = tmp_path / "target.db"
    with Store(target_path) as target:
        assert import_jsonl(target, out) == ImportResult(2, 0, 3, 0)
        before = counts(target_path)
        assert import_jsonl(target, out) == ImportResult(0, 2, 0, 3)
        assert counts(target_path) == before == counts(tmp_path / "source.db")
        copied, original = target.get_example(1), store.get_example(1)
    assert (copied.content_hash, copied.prompt, copied.messages, copied.images) == (
        original.content_hash, original.prompt, original.messages, original.images)
    assert [(lb.reviewer, lb.label, lb.categories, lb.note) for lb in copied.labels] == [
        (lb.reviewer, lb.label, lb.categories, lb.note) for lb in original.labels]
    assert copied.output == original.output


def test_import_into_database_with_same_example_keeps_it_once(store, tmp_path):
    out = tmp_path / "out.jsonl"
    export_jsonl(store, out)
    with Store(tmp_path / "target.db") as target:
        target.save_example(example("hello", unsafe=False, p_unsafe=0.01, categories=(),
                                    excluded=("S5",),
                                    custom=(CustomCategory("Rivals", "Names a competitor."),)),
                            label("carol", "safe", ()))
        assert import_jsonl(target, out) == ImportResult(1, 1, 3, 0)
        assert target.count_examples() == 2


def test_bad_import_writes_nothing(store, tmp_path):
    out = tmp_path / "out.jsonl"
    export_jsonl(store, out)
    lines = out.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["labels"][0]["label"] = "perhaps"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    target_path = tmp_path / "target.db"
    with Store(target_path) as target:
        with pytest.raises(ImportFailed, match="Nothing was imported"):
            import_jsonl(target, bad)
        bad.write_text(lines[0] + "\n{not json\n")
        with pytest.raises(ImportFailed, match="bad.jsonl line 2"):
            import_jsonl(target, bad)
        tampered = json.loads(lines[0])
        tampered["images"][0]["sha256"] = "0" * 64
        bad.write_text(json.dumps(tampered) + "\n")
        with pytest.raises(ImportFailed, match="does not match its SHA-256"):
            import_jsonl(target, bad)
    assert counts(target_path) == dict.fromkeys(counts(target_path), 0)
