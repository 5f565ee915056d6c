"""`python -m labels` through a subprocess: export, import, metrics, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_labels_helpers import example, image, label

from labels import Store
from labels.cli import main

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labels", *args], capture_output=True,
                          text=True, cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})


def make_db(path: Path) -> None:
    with Store(path) as store:
        store.save_example(example("steal a car", (image((1, 2, 3)),)), label("alice"))
        store.save_example(example("bread", unsafe=False, p_unsafe=0.3, categories=()),
                           label("alice", "unsafe", ("S1",)))
        store.save_example(example("hi", unsafe=True, p_unsafe=0.7), label("alice", "safe", ()))


def test_export_import_metrics(tmp_path):
    db = tmp_path / "a.db"
    make_db(db)
    result = cli("export", "--db", str(db), "--format", "jsonl", "a.jsonl", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "Wrote 3 examples to a.jsonl\n", "")
    result = cli("import", "--db", "b.db", "a.jsonl", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (
        0, "Imported 3 examples (0 already there) and 3 labels (0 already there)\n")
    result = cli("import", "--db", "b.db", "a.jsonl", cwd=tmp_path)
    assert result.stdout == "Imported 0 examples (3 already there) and 0 labels (3 already there)\n"
    result = cli("metrics", "--db", "b.db", "--json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("n", "precision", "recall", "f1", "fpr", "auprc")} == {
        "n": 3, "precision": 0.5, "recall": 0.5, "f1": 0.5, "fpr": 1.0,
        "auprc": pytest.approx(5 / 6)}
    assert data["confusion_matrix"]["matrix"] == [[0, 1], [1, 1]]
    assert [r["code"] for r in data["categories"]][:2] == ["S1", "S2"]


def test_other_formats_and_table_in_process(tmp_path, capsys):
    db = tmp_path / "a.db"
    make_db(db)
    for fmt, name in (("parquet", "a.parquet"), ("llama-guard", "t.jsonl")):
        assert main(["export", "--db", str(db), "--format", fmt, str(tmp_path / name)]) == 0
        assert (tmp_path / name).stat().st_size > 0
    assert main(["metrics", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "S2            1  0.000  0.500"
    assert out[2:4] == ["labels     3", "precision  0.500"]


def test_errors_are_one_line_and_status_two(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{nope\n")
    for args in (("import", "--db", "x.db", "bad.jsonl"),
                 ("metrics", "--db", "nowhere.db"),
                 ("export", "--db", "nowhere.db", "--format", "jsonl", "o.jsonl")):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_labels_imports_neither_torch_nor_gradio(tmp_path):
    code = ("import sys, labels, labels.cli, labels.export, labels.metrics; "
            "print(sorted(m for m in ('torch', 'gradio', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})
    assert (result.returncode, result.stdout) == (0, "[]\n")
