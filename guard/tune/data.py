"""What tuning learns from: reviewers' labels as Llama Guard prompt/answer pairs, and the split.

Pure: no torch, no model. Examples come from a Guard Lab database (conversations with their
images) or from a `labels.export` llama-guard file (rendered prompts, text only). Prompt and
answer are built exactly as that export builds them: the stored prompt, and
`labels.export.llama_guard_target` of the gold label.

One example gives one training pair, whatever the number of its labels. By default that is the
example's final label (labels/final.py: its reviewers agreed at the queue's overlap, or a lead
decided); examples without one are left out. `labels="all"` takes the label every active
reviewer gave (unsafe categories: the union of theirs) and leaves out examples whose reviewers
disagree; `labels="reviewer:NAME"` takes that reviewer's.
A stored conversation is rendered again with its policy (the prompt the tuned model will be
given; equal to the stored one unless the renderer changed since), as a plan, so that message
text is never read as control tokens. An export file holds prompt strings only, tokenized as
they stand: prefer the database.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.core.errors import GuardError
from guard.core.prompts import IMAGE_PLACEHOLDER, CustomCategory, PromptPlan, plan
from guard.tune.errors import NotEnoughLabels, TuneError
from labels.content import canonical_json, code_key
from labels.export import llama_guard_target
from labels.final import ALL, FINAL, LabelChoice
from labels.records import UNSAFE, StoredExample
from labels.store import Store

MIN_EXAMPLES = 8
MIN_PER_CLASS = 3
DATABASE, EXPORT = "database", "export"


@dataclass(frozen=True)
class TuneExample:
    """One prompt and the answer the model should give. `id` is the database example id, or
    `p` + 16 hex digits of the prompt's SHA-256 for an export file (which has no ids)."""

    id: str
    prompt: str  # the rendered prompt, as `plan.prompt` when there is a plan
    target: str
    unsafe: bool
    categories: tuple[str, ...] = ()
    images: tuple[Any, ...] = field(default=(), compare=False, repr=False)  # PIL, prompt order
    image_sha256: tuple[str, ...] = ()
    preview: str = ""  # the judged message, for listings
    model_right: bool | None = None  # did the model that judged it agree; None: not known
    plan: PromptPlan | None = field(default=None, compare=False, repr=False)

    def fingerprint(self) -> list[Any]:
        """What the data hash covers: the id, the prompt, the images and the answer."""
        return [self.id, _sha256(self.prompt), list(self.image_sha256), self.target]


@dataclass(frozen=True)
class TuneData:
    source: str  # DATABASE or EXPORT
    path: str
    family: str
    examples: tuple[TuneExample, ...]
    skipped: dict[str, int]  # reason -> examples left out
    rerendered: int = 0  # examples whose stored prompt differs from today's render
    labels: str = FINAL  # which labels (labels.final.LabelChoice), for a database

    @property
    def counts(self) -> dict[str, int]:
        found = Counter("unsafe" if e.unsafe else "safe" for e in self.examples)
        return {"safe": found["safe"], "unsafe": found["unsafe"]}

    def by_id(self) -> dict[str, TuneExample]:
        return {e.id: e for e in self.examples}


@dataclass(frozen=True)
class Split:
    """The held-out examples, fixed by the seed and stored by id (split.json)."""

    seed: int
    eval_fraction: float
    train_ids: tuple[str, ...]
    eval_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "eval_fraction": self.eval_fraction,
                "train_ids": list(self.train_ids), "eval_ids": list(self.eval_ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Split:
        return cls(int(data["seed"]), float(data["eval_fraction"]),
                   tuple(str(i) for i in data["train_ids"]),
                   tuple(str(i) for i in data["eval_ids"]))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_sha256(examples: Iterable[TuneExample]) -> str:
    """Of the examples' ids, prompts, images and answers, in id order."""
    rows = sorted((e.fingerprint() for e in examples), key=lambda row: _id_key(row[0]))
    return hashlib.sha256(canonical_json(rows).encode("utf-8")).hexdigest()


def _id_key(example_id: str) -> tuple[int, str]:
    return (int(example_id), "") if example_id.isdigit() else (1 << 62, example_id)


def _gold(labels: Sequence[tuple[str, Sequence[str]]]) -> tuple[str, tuple[str, ...]] | None:
    """(label, categories) that the reviewers agree on; None when they disagree."""
    values = {label for label, _ in labels}
    if len(values) != 1:
        return None
    label = values.pop()
    codes = {c for value, cats in labels if value == UNSAFE for c in cats}
    return label, tuple(sorted(codes, key=code_key))


def example_from_stored(example: StoredExample,
                        labels: LabelChoice | str = FINAL) -> TuneExample | None:
    """The training pair of a stored example; None when `labels` gives it no answer (no final
    label; with "all", no labels or they disagree; no label by that reviewer).
    Raises GuardError when its conversation no longer renders (a policy refused today)."""
    gold = _answer(example, LabelChoice.parse(labels))
    if gold is None:
        return None
    label, categories = gold
    custom = [CustomCategory(c["name"], c.get("description", "")) for c in example.custom]
    prompt_plan = plan(example.conversation, example.excluded, example.family, custom)
    last = example.conversation.turns[-1]
    return TuneExample(
        id=str(example.id), prompt=prompt_plan.prompt,
        target=llama_guard_target(label, categories), unsafe=label == UNSAFE,
        categories=categories, images=example.conversation.images,
        image_sha256=tuple(b.sha256 for b in example.images), preview=last.text[:200],
        model_right=example.output.unsafe == (label == UNSAFE), plan=prompt_plan)


def _answer(example: StoredExample, choice: LabelChoice
            ) -> tuple[str, tuple[str, ...]] | None:
    if choice.kind == FINAL:
        final = example.final
        return None if final is None else (final.label, tuple(final.categories))
    if choice.kind == ALL:
        return _gold([(label.label, label.categories) for label in example.labels])
    return _gold([(label.label, label.categories) for label in example.labels
                  if label.reviewer == choice.reviewer])


def from_store(store: Store, family: str, labels: LabelChoice | str = FINAL) -> TuneData:
    """Every example of `family` in the database that `labels` gives an answer."""
    choice = LabelChoice.parse(labels)
    examples, skipped, rerendered = [], Counter(), 0
    for stored in store.iter_examples():
        if stored.family != family:
            skipped[f"judged as {stored.family}"] += 1
            continue
        if not stored.labels:
            skipped["without a label"] += 1
            continue
        try:
            example = example_from_stored(stored, choice)
        except GuardError:
            skipped["that no longer render"] += 1
            continue
        if example is None:
            skipped[_why_none(stored, choice)] += 1
            continue
        rerendered += example.prompt != stored.prompt
        examples.append(example)
    return TuneData(DATABASE, str(store.path), family, tuple(examples), dict(skipped), rerendered,
                    str(choice))


def _why_none(stored: StoredExample, choice: LabelChoice) -> str:
    if choice.kind == FINAL:
        verdicts = {(lb.label, lb.categories) for lb in stored.labels}
        return ("whose reviewers disagree (a lead resolves them)" if len(verdicts) > 1
                else "without a final label yet (fewer reviews than the queue's overlap)")
    if choice.kind == ALL:
        return "whose reviewers disagree"
    return f"without a label by {choice.reviewer}"


def from_export(path: str | Path, family: str) -> TuneData:
    """A `python -m labels export --format llama-guard` file: one {"prompt", "target"} a line.

    The file has no images, so prompts that name one are left out; lines with the same prompt
    (several reviewers) are one example, left out when their answers differ.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TuneError(f"No export file at {path}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TuneError(f"Cannot read {path} as UTF-8 text: {exc}.") from None
    targets: dict[str, set[str]] = {}
    prompts: dict[str, str] = {}
    skipped = Counter()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, target = row["prompt"], row["target"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TuneError(f"{path.name} line {number} is not a llama-guard export row "
                            '({"prompt", "target"}). Export with --format llama-guard.') from None
        if not isinstance(prompt, str) or not isinstance(target, str) or not prompt:
            raise TuneError(f"{path.name} line {number}: prompt and target must be text.")
        if IMAGE_PLACEHOLDER in prompt:
            skipped["with images (an export has none; tune from the database)"] += 1
            continue
        key = "p" + _sha256(prompt)[:16]
        prompts[key] = prompt
        targets.setdefault(key, set()).add(target.strip())
    examples = []
    for key, answers in targets.items():
        if len(answers) != 1:
            skipped["whose reviewers disagree"] += 1
            continue
        target = answers.pop()
        head, _, codes = target.partition("\n")
        if head not in ("safe", "unsafe"):
            raise TuneError(f"{path.name}: the target {target!r} is neither 'safe' nor "
                            "'unsafe\\nS1,...'.")
        categories = tuple(c.strip() for c in codes.split(",") if c.strip())
        examples.append(TuneExample(id=key, prompt=prompts[key], target=target,
                                    unsafe=head == UNSAFE, categories=categories,
                                    preview=_judged_text(prompts[key])))
    return TuneData(EXPORT, str(path), family, tuple(examples), dict(skipped))


def _judged_text(prompt: str) -> str:
    """The last message of a rendered prompt, roughly: for listings only."""
    block = prompt.split("<BEGIN CONVERSATION>")[-1].split("<END CONVERSATION>")[0]
    parts = [p for p in block.replace("\\n\\n", "\n").split("\n") if p.strip()]
    return parts[-1].strip()[:200] if parts else ""


def check_usable(data: TuneData, *, min_examples: int = MIN_EXAMPLES,
                 min_per_class: int = MIN_PER_CLASS) -> None:
    """Refuse data too small to tune on and still hold out some of each class."""
    counts = data.counts
    left_out = "; ".join(f"{n} {why}" for why, n in sorted(data.skipped.items()))
    where = f"{data.path} has {counts['safe']} safe and {counts['unsafe']} unsafe usable examples"
    where += f" ({left_out} left out)" if left_out else ""
    if len(data.examples) < min_examples:
        raise NotEnoughLabels(
            f"{where}: tuning needs at least {min_examples}. Label more examples that the model "
            "got wrong, and some it got right.")
    for name in ("safe", "unsafe"):
        if counts[name] < min_per_class:
            raise NotEnoughLabels(
                f"{where}: tuning needs at least {min_per_class} {name} ones, so that some can "
                f"be held out to measure. Label more {name} examples.")


def make_split(examples: Sequence[TuneExample], *, seed: int, eval_fraction: float) -> Split:
    """Hold out `eval_fraction` of each stratum (gold label, and whether the model that judged
    the example got it right), chosen by a hash of the seed and the example id: the same data
    and seed give the same split on any machine, and the held-out rows measure both what the
    adapter fixes and what it breaks. Each class keeps at least one example on each side."""
    if not 0.0 < eval_fraction < 1.0:
        raise TuneError(f"The held-out fraction must be between 0 and 1, got {eval_fraction}.")
    for strata in (lambda e: (e.unsafe, e.model_right), lambda e: (e.unsafe,)):
        held = _held_out(examples, strata, seed, eval_fraction)
        classes = {e.unsafe for e in examples if e.id in held}
        if len(classes) == 2:
            break
    else:
        raise NotEnoughLabels("Too few examples of one class to hold any out; label more.")
    eval_ids = tuple(sorted(held, key=_id_key))
    train_ids = tuple(sorted((e.id for e in examples if e.id not in held), key=_id_key))
    return Split(seed, eval_fraction, train_ids, eval_ids)


def _held_out(examples: Sequence[TuneExample], stratum: Any, seed: int,
              fraction: float) -> set[str]:
    groups: dict[Any, list[str]] = {}
    for e in examples:
        groups.setdefault(stratum(e), []).append(e.id)
    held: set[str] = set()
    for ids in groups.values():
        if len(ids) < 2:
            continue
        ids.sort(key=lambda i: _sha256(f"{seed}:{i}"))
        held.update(ids[:min(len(ids) - 1, max(1, round(fraction * len(ids))))])
    return held


def pick(data: Any, ids: Sequence[str], *, rows: str = "example(s)",
         gone: str = "deleted, unlabelled or now disputed") -> tuple[Any, ...]:
    """The examples of `ids` in `data` (anything with `by_id()` and `path`), in that order;
    refuses when one is no longer usable (`rows` names them, `gone` says how one goes)."""
    found = data.by_id()
    missing = [i for i in ids if i not in found]
    if missing:
        raise TuneError(
            f"{len(missing)} {rows} of the stored split are no longer usable in {data.path} "
            f"({gone}: {', '.join(missing[:10])}). Tune into a new output folder.")
    return tuple(found[i] for i in ids)
