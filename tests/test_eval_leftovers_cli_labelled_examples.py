"""`python -m guard.eval --labelled-examples DB` (issues 23 and 24 leftovers): the final-labelled
examples of a labels database evaluated as Batch evaluation's "Labelled examples" evaluates them
(the same file, so the same run resumes), with --policy and --sweep-categories; and the
--predictions lines of a policy run carry the model's own answer beside the policy's decision.
Through the CLI's main() with the tiny models."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import tiny_cache_dir

from guard.eval.cli import main
from guard.testing.tiny import BENIGN, VIOLENT
from guard_app.evaluate import logic as view
from labels.runs import Runs

EVERY = [f"S{i}" for i in range(1, 15)]
OLD_FIELDS = {"id", "gold", "verdict", "p_unsafe", "categories", "gold_categories",
              "p_malicious", "error"}


@pytest.fixture
def tiny_env(monkeypatch, tiny_dirs):
    monkeypatch.setenv("GUARD_LAB_TINY_DIR", str(tiny_cache_dir()))


@pytest.fixture(scope="module")
def labelled_db(guards, tmp_path_factory):
    """A labels database with two final-labelled one-message examples and one of three turns
    (which a dataset row cannot hold), each labelled alike by two reviewers."""
    from guard_app.moderate import logic as moderate
    from guard_app.review import logic as review
    from labels import Store

    path = tmp_path_factory.mktemp("labelled") / "labels.db"
    with Store(path) as store:
        for turns in ([(VIOLENT, "unsafe")], [(BENIGN, "safe")],
                      [(BENIGN, "safe"), ("Sure.", "safe"), (VIOLENT, "unsafe")]):
            editor = [{"role": "user" if i % 2 == 0 else "assistant", "text": text,
                       "images": []} for i, (text, _) in enumerate(turns)]
            judged = moderate.run_guards(guards, None, editor, EVERY, [], 0.5, None)
            label = turns[-1][1]
            for reviewer in ("ana", "ben"):
                review.save_review(store, judged, 0.5, reviewer=reviewer, model_right=None,
                                   label=label, categories=["S1"] if label == "unsafe" else [],
                                   note="", max_images=5)
    return path


def copy_of(db, tmp_path):
    target = tmp_path / "labels.db"
    shutil.copy(db, target)
    return target


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_labelled_examples_are_evaluated_as_the_page_does_and_resume(labelled_db, tmp_path,
                                                                     capsys, tiny_env):
    from labels import Store

    db = copy_of(labelled_db, tmp_path)
    report = tmp_path / "report.json"
    code, out, err = run(capsys, "--labelled-examples", db, "--out", db, "--tiny", "--name",
                         "lab", "--report", report)
    assert code == 0, err
    assert "--labelled-examples: 1 labelled examples left out: several turns or images" in err
    data = json.loads(report.read_text())
    assert data["n"] == 2 and data["run"]["name"] == "lab"
    with Store(db) as store:
        run_ = Runs(store).get("lab")
        # The very file Batch evaluation's "Labelled examples" reads: same content, same hash.
        page = view.pick_dataset("labelled", None, None, {}, store=store)
        assert run_.settings.dataset_sha256 == page.sha256
        assert run_.settings.dataset == page.path and run_.settings.format == "jsonl"
        golds = {r.row_id: r.gold for r in Runs(store).results(run_.id)}
    assert golds == {"example-1": True, "example-2": False}

    # The same command again judges nothing: the same labels give the same file and run.
    code, out, err = run(capsys, "--labelled-examples", db, "--out", db, "--tiny", "--name",
                         "lab")
    assert code == 0, err
    assert "resumed run 'lab': 2 rows were already done, 0 judged now" in err


def test_a_policy_and_its_sweep_over_the_labelled_examples(labelled_db, tmp_path, capsys,
                                                          tiny_env):
    from labels import Store

    labels_db, out_db = copy_of(labelled_db, tmp_path), tmp_path / "runs.db"
    # A policy that flags everything (threshold 0): the tiny model answers "safe" to BENIGN,
    # the policy decides "unsafe"; S3..S14 left out, so the sweep has three variants.
    policy = tmp_path / "zero.json"
    policy.write_text(json.dumps({"name": "zero", "excluded": EVERY[2:], "threshold": 0.0,
                                  "prompt_guard": {"model": "none"}}))
    predictions = tmp_path / "pred.jsonl"
    code, out, err = run(capsys, "--labelled-examples", labels_db, "--out", out_db, "--tiny",
                         "--policy", policy, "--name", "zero", "--predictions", predictions)
    assert code == 0, err
    lines = {line["id"]: line for line in map(json.loads, predictions.read_text().splitlines())}
    assert set(lines) == {"example-1", "example-2"}
    benign = lines["example-2"]
    assert set(benign) == OLD_FIELDS | {"model_answer"}  # as before, the model's answer beside
    assert benign["verdict"] == "unsafe"  # the policy's decision
    assert benign["model_answer"] == {"label": "safe", "named": [],
                                      "p_unsafe": benign["p_unsafe"]}
    violent = lines["example-1"]["model_answer"]
    assert violent["label"] == "unsafe" and "S1" in violent["named"]

    code, out, err = run(capsys, "--labelled-examples", labels_db, "--out", out_db, "--tiny",
                         "--policy", policy, "--name", "zero", "--sweep-categories")
    assert code == 0, err
    table = [line.split()[0:2] for line in out.splitlines()[1:4]]
    assert [row[0] for row in table] == ["policy", "without", "without"]
    assert "resumed run 'zero': 2 rows were already done, 0 judged now" in err  # the policy's
    with Store(out_db) as store:
        names = view.run_names(Runs(store))
    assert {"zero", "zero [without S1]", "zero [without S2]"} <= set(names)

    # Without a policy, --predictions carry no model_answer: the model's answer is the verdict.
    plain = tmp_path / "plain.jsonl"
    code, out, err = run(capsys, "--labelled-examples", labels_db, "--out", out_db, "--tiny",
                         "--name", "plain", "--predictions", plain)
    assert code == 0, err
    assert all(set(json.loads(line)) == OLD_FIELDS for line in plain.read_text().splitlines())


@pytest.mark.parametrize(("argv", "said"), [
    ([], "Name the dataset and its format: python -m guard.eval DATA --format "),
    (["--policy", "zero"], "--out DB --policy NAME|FILE."),
    (["data.csv", "--labelled-examples", "{db}"], "Give DATA or --labelled-examples DB, not both"),
    (["--labelled-examples", "{db}", "--format", "csv"], "--format goes with a DATA file"),
    (["--labelled-examples", "{missing}"], "no such labels database"),
])
def test_the_source_is_data_or_the_labelled_examples(tmp_path, capsys, argv, said):
    db = tmp_path / "lab.db"
    db.write_bytes(b"")
    argv = [a.format(db=db, missing=tmp_path / "nope.db") for a in argv]
    code, out, err = run(capsys, *argv, "--out", db, "--tiny")
    assert code == 2
    assert len(err.splitlines()) == 1 and said in err
