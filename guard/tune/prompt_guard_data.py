"""What Prompt Guard tuning learns from: user messages labelled benign or malicious.

Pure: no torch, no model. Rows come from the labels database (`labels.prompt_guard`: one row a
judged user message with its reviewers' Prompt Guard label, and the score the model gave it) or
from a JSONL file of {"text", "label"} rows (the `prompt-guard` export format, or a team's own
file). A label is 1/0, true/false, or "malicious"/"benign" (also "jailbreak", "injection",
"attack" for 1). Rows with the same text and the same label are one example; the same text with
both labels is left out (reviewers disagree).

The held-out split is `guard.tune.data.make_split`: stratified by label and by whether the model
that scored the message got it right, fixed by the seed and the ids.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.tune.data import Split, make_split
from guard.tune.data import pick as pick_rows
from guard.tune.errors import NotEnoughLabels, TuneError

DATABASE, JSONL = "database", "jsonl"
MIN_EXAMPLES = 8
MIN_PER_CLASS = 3
# The score at which a stored Prompt Guard score counts as "malicious" when telling whether the
# model was right (the split's strata); Meta's card reports its classifier at 0.5 too.
RIGHT_AT = 0.5
_MALICIOUS = {"1", "true", "malicious", "jailbreak", "injection", "prompt_injection", "attack"}
_BENIGN = {"0", "false", "benign", "safe"}


@dataclass(frozen=True)
class PGExample:
    """One labelled message. `id` is "<example id>:<message index>" from the database, or "t" +
    16 hex digits of the text's SHA-256 from a file."""

    id: str
    text: str
    malicious: bool
    model_right: bool | None = None  # did the score it was labelled against agree; None: unknown
    score: float | None = None

    @property
    def unsafe(self) -> bool:  # the name make_split stratifies on
        return self.malicious

    def fingerprint(self) -> list[Any]:
        return [self.id, _sha256(self.text), int(self.malicious)]


@dataclass(frozen=True)
class PGData:
    source: str  # DATABASE or JSONL
    path: str
    examples: tuple[PGExample, ...]
    skipped: dict[str, int]
    labels: str = "final"  # database: "final" or "all"

    @property
    def counts(self) -> dict[str, int]:
        found = Counter("malicious" if e.malicious else "benign" for e in self.examples)
        return {"benign": found["benign"], "malicious": found["malicious"]}

    def by_id(self) -> dict[str, PGExample]:
        return {e.id: e for e in self.examples}

    def record(self) -> dict[str, Any]:
        """What the tuned folder records about the data."""
        return {"source": self.source, "path": self.path, "labels": self.labels,
                "examples": len(self.examples), **self.counts, "skipped": dict(self.skipped),
                "sha256": data_sha256(self.examples)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_sha256(examples: Iterable[PGExample]) -> str:
    """Of the examples' ids, texts and labels, in id order."""
    rows = sorted(e.fingerprint() for e in examples)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode("utf-8")).hexdigest()


def parse_label(value: Any) -> bool | None:
    """True for malicious, False for benign, None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower().replace("-", "_").replace(" ", "_")
        if word in _MALICIOUS:
            return True
        if word in _BENIGN:
            return False
    return None


def _merge(rows: Iterable[tuple[str, str, bool, float | None]], skipped: Counter
           ) -> list[PGExample]:
    """(id, text, malicious, score) rows, one example per id; ids with both labels left out."""
    labels: dict[str, set[bool]] = {}
    first: dict[str, tuple[str, float | None]] = {}
    for key, text, malicious, score in rows:
        labels.setdefault(key, set()).add(malicious)
        first.setdefault(key, (text, score))
    examples = []
    for key, found in labels.items():
        if len(found) != 1:
            skipped["whose reviewers disagree"] += 1
            continue
        malicious = found.pop()
        text, score = first[key]
        right = None if score is None else (score >= RIGHT_AT) == malicious
        examples.append(PGExample(key, text, malicious, right, score))
    return examples


def from_jsonl(path: str | Path) -> PGData:
    """A JSONL file of {"text", "label"} rows (a "score" beside them is kept)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TuneError(f"No data file at {path}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TuneError(f"Cannot read {path} as UTF-8 text: {exc}.") from None
    rows, skipped = [], Counter()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = row["text"], row["label"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TuneError(f"{path.name} line {number} is not a prompt-guard row "
                            '({"text": ..., "label": 0|1|"benign"|"malicious"}). Export with '
                            "python -m labels export --format prompt-guard.") from None
        malicious = parse_label(label)
        if not isinstance(text, str) or malicious is None:
            raise TuneError(f"{path.name} line {number}: text must be text and label one of 0, "
                            f"1, benign, malicious; got label {label!r}.")
        if not text.strip():
            skipped["with empty text"] += 1
            continue
        score = row.get("score")
        score = float(score) if isinstance(score, (int, float)) else None
        rows.append(("t" + _sha256(text)[:16], text, malicious, score))
    return PGData(JSONL, str(path), tuple(_merge(rows, skipped)), dict(skipped), "file")


def from_store(store: Any, *, labels: str = "final") -> PGData:
    """The Prompt Guard labels of a Guard Lab database (`labels.prompt_guard`): "final" takes
    each message's final label, "all" the messages whose active labels agree, "reviewer:NAME"
    that reviewer's (labels.final.LabelChoice)."""
    from labels.final import LabelChoice
    from labels.prompt_guard import prompt_guard_rows

    choice = str(LabelChoice.parse(labels))
    rows, skipped = [], Counter()
    for row in prompt_guard_rows(store, labels=choice):
        if not row.text.strip():
            skipped["with empty text"] += 1
            continue
        score = None if row.score is None else float(row.score)
        rows.append((f"{row.example_id}:{row.message_index}", row.text, bool(row.malicious),
                     score))
    return PGData(DATABASE, str(store.path), tuple(_merge(rows, skipped)), dict(skipped), choice)


def check_usable(data: PGData, *, min_examples: int = MIN_EXAMPLES,
                 min_per_class: int = MIN_PER_CLASS) -> None:
    """Refuse data too small to tune on and still hold out some of each class."""
    counts = data.counts
    left_out = "; ".join(f"{n} {why}" for why, n in sorted(data.skipped.items()))
    where = (f"{data.path} has {counts['benign']} benign and {counts['malicious']} malicious "
             "labelled messages") + (f" ({left_out} left out)" if left_out else "")
    if len(data.examples) < min_examples:
        raise NotEnoughLabels(f"{where}: tuning needs at least {min_examples}. Label more "
                              "messages Prompt Guard got wrong, and some it got right.")
    for name in ("benign", "malicious"):
        if counts[name] < min_per_class:
            raise NotEnoughLabels(
                f"{where}: tuning needs at least {min_per_class} {name} ones, so that some can "
                f"be held out to measure. Label more {name} messages.")


def split(data: PGData, *, seed: int, eval_fraction: float) -> Split:
    return make_split(data.examples, seed=seed, eval_fraction=eval_fraction)  # type: ignore[arg-type]


def pick(data: PGData, ids: Sequence[str]) -> tuple[PGExample, ...]:
    """The messages of `ids`, in that order; refuses when one is no longer usable."""
    return pick_rows(data, ids, rows="message(s)",
                     gone="deleted, unlabelled, relabelled or now disputed")
