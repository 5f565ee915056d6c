"""The labelled examples as a dataset file, for an evaluation or a policy's sweep over them.

One JSONL row (guard.core.datasets' `jsonl` columns: id, prompt, response, label, categories)
per example of one family with an answer under `labels` (final labels by default) whose
conversation a dataset row can hold: one user message of text, optionally followed by one
assistant answer. The rest (several turns, images) are counted apart, not silently judged
differently. The file is named by its content, so the same labels give the same file and an
evaluation of it resumes; new labels give a new file and a new run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labels.final import FINAL, LabelChoice, answers
from labels.store import Store

FOLDER = "labelled-datasets"  # beside the database


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    rows: int
    skipped: int  # examples with an answer that a dataset row cannot hold


def labelled_records(store: Store, family: str, labels: LabelChoice | str = FINAL, *,
                     hidden: frozenset[int] = frozenset()) -> tuple[list[dict[str, Any]], int]:
    """(rows, skipped): the examples of `family` with an answer, as dataset rows, oldest first;
    not those in `hidden` (a reviewer's blind examples, labels.queues.blind_examples)."""
    found = answers(store, labels)
    records, skipped = [], 0
    for example_id in sorted(set(found) - hidden):
        example = store.get_example(example_id)
        if example.family != family:
            continue
        turns = example.conversation.turns
        roles = [t.role for t in turns]
        if roles not in (["user"], ["user", "assistant"]) or any(t.images for t in turns):
            skipped += 1
            continue
        answer = found[example_id]
        records.append({"id": f"example-{example_id}", "prompt": turns[0].text,
                        "response": turns[1].text if len(turns) > 1 else "",
                        "label": answer.label, "categories": ",".join(answer.categories)})
    return records, skipped


def write_labelled(store: Store, family: str, labels: LabelChoice | str = FINAL, *,
                   hidden: frozenset[int] = frozenset()) -> LabelledFile:
    """The labelled examples of `family` as a JSONL file in FOLDER beside the database."""
    records, skipped = labelled_records(store, family, labels, hidden=hidden)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    folder = Path(store.path).resolve().parent / FOLDER
    path = folder / f"{family}-{digest}.jsonl"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)  # whole or absent: a run re-reads its texts from it
    return LabelledFile(path, len(records), skipped)
