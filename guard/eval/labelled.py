"""The labels database's final-labelled examples as a dataset, for `python -m guard.eval
--labelled-examples DB`: the very file Batch evaluation's "Labelled examples" writes
(labels.labelled_dataset, named by its content), so the same labels give the same dataset and
the same command resumes its run; new labels give a new file and a new run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from guard.core.categories import Family
from guard.core.datasets import BadRow, Dataset, read_dataset
from guard.eval.errors import EvalError
from labels.labelled_dataset import write_labelled
from labels.store import Store

CLI_NEXT = ("Label such examples first (python -m labels, or the app's Review), or evaluate a "
            "dataset file: python -m guard.eval DATA --format FORMAT.")


def labelled_examples(store: Store, family: Family | str,
                      hidden: frozenset[int] = frozenset(), *, what_next: str = CLI_NEXT,
                      named: bool = True) -> Dataset:
    """The final-labelled examples of `family` as a dataset; those a row cannot hold (several
    turns, images) are named as one bad row (line 0), as the page names them. `what_next`
    ends the refusal when there are none (the page says its own); `named` starts it with the
    database's file name."""
    written = write_labelled(store, Family(family).value, hidden=hidden)
    if not written.rows:
        where = f"{Path(store.path).name}: no" if named else "No"
        raise EvalError(f"{where} {Family(family).label} example has a final label and a text "
                        f"conversation of one user message (and an optional answer); "
                        f"{written.skipped} labelled ones have several turns or images. "
                        f"{what_next}")
    dataset = read_dataset(written.path, "jsonl")
    if written.skipped:
        left_out = BadRow(0, f"{written.skipped} labelled examples left out: several turns or "
                             "images, which a dataset row cannot hold")
        dataset = replace(dataset, bad_rows=(*dataset.bad_rows, left_out))
    return dataset
