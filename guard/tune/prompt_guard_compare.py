"""Before and after for a tuned Prompt Guard: the held-out messages scored by the base and by the
tuned model, the same way the engine scores them (every 512-token window, the maximum), counted
at one threshold, and the messages whose verdict changed listed each way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard.tune.prompt_guard_data import PGExample


@dataclass(frozen=True)
class Counts:
    """Malicious is the positive class."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else 0.0

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def fpr(self) -> float | None:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
                "accuracy": self.accuracy, "precision": self.precision, "recall": self.recall,
                "fpr": self.fpr}


@dataclass(frozen=True)
class Scored:
    id: str
    text: str
    gold: bool  # malicious
    p_before: float
    p_after: float


@dataclass(frozen=True)
class Flip:
    """A held-out message whose verdict changed."""

    row: Scored
    before: bool  # flagged malicious by the base
    after: bool

    @property
    def fixed(self) -> bool:
        return self.after == self.row.gold

    @property
    def broke(self) -> bool:
        return self.before == self.row.gold

    @property
    def direction(self) -> str:
        word = {True: "malicious", False: "benign"}
        return f"{word[self.before]} -> {word[self.after]}"


@dataclass(frozen=True)
class BeforeAfter:
    threshold: float
    rows: tuple[Scored, ...]
    before: Counts
    after: Counts

    @property
    def flips(self) -> tuple[Flip, ...]:
        t = self.threshold
        return tuple(Flip(r, r.p_before >= t, r.p_after >= t) for r in self.rows
                     if (r.p_before >= t) != (r.p_after >= t))

    @property
    def fixed(self) -> tuple[Flip, ...]:
        return tuple(f for f in self.flips if f.fixed)

    @property
    def broke(self) -> tuple[Flip, ...]:
        return tuple(f for f in self.flips if f.broke)

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "before": self.before.to_json(),
                "after": self.after.to_json(), "fixed": len(self.fixed),
                "broke": len(self.broke),
                "flips": [{"id": f.row.id, "text": f.row.text,
                           "gold": "malicious" if f.row.gold else "benign",
                           "direction": f.direction, "p_before": round(f.row.p_before, 6),
                           "p_after": round(f.row.p_after, 6), "fixed": f.fixed,
                           "broke": f.broke} for f in self.flips],
                "rows": [{"id": r.id, "gold": int(r.gold), "p_before": round(r.p_before, 6),
                          "p_after": round(r.p_after, 6)} for r in self.rows]}


def count(gold: Sequence[bool], scores: Sequence[float], threshold: float) -> Counts:
    flagged = [s >= threshold for s in scores]
    pairs = list(zip(gold, flagged, strict=True))
    return Counts(tp=sum(g and f for g, f in pairs), fp=sum(not g and f for g, f in pairs),
                  tn=sum(not g and not f for g, f in pairs), fn=sum(g and not f for g, f in pairs))


def before_after(base: Any, tuned: Any, examples: Sequence[PGExample], *, threshold: float,
                 preprocessing: str = "none") -> BeforeAfter:
    """Score `examples` with both Prompt Guards (engine objects) and compare at `threshold`."""
    texts = [e.text for e in examples]
    before = [s.p_malicious for s in base.score_many(texts, preprocessing=preprocessing)]
    after = [s.p_malicious for s in tuned.score_many(texts, preprocessing=preprocessing)]
    rows = tuple(Scored(e.id, e.text, e.malicious, b, a)
                 for e, b, a in zip(examples, before, after, strict=True))
    gold = [e.malicious for e in examples]
    return BeforeAfter(threshold, rows, count(gold, before, threshold),
                       count(gold, after, threshold))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_before_after(result: BeforeAfter, label: str) -> str:
    b, a = result.before, result.after
    lines = [f"{label}: {b.n} held-out messages at threshold {result.threshold}, base -> tuned",
             f"  accuracy {_pct(b.accuracy)} -> {_pct(a.accuracy)}; recall {_pct(b.recall)} -> "
             f"{_pct(a.recall)}; false positive rate {_pct(b.fpr)} -> {_pct(a.fpr)}; "
             f"precision {_pct(b.precision)} -> {_pct(a.precision)}",
             f"  {len(result.flips)} verdicts changed ({len(result.fixed)} fixed, "
             f"{len(result.broke)} broken)"]
    for direction in ("benign -> malicious", "malicious -> benign"):
        chosen = [f for f in result.flips if f.direction == direction]
        if chosen:
            lines.append(f"  {direction}: {len(chosen)}")
        for f in chosen:
            mark = "fixed" if f.fixed else "BROKE"
            gold = "malicious" if f.row.gold else "benign"
            lines.append(f"    [{mark}] {f.row.id} gold={gold} p {f.row.p_before:.3f} -> "
                         f"{f.row.p_after:.3f}  {f.row.text[:80]!r}")
    return "\n".join(lines)
