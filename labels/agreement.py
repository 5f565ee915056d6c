"""Agreement between reviewers: Cohen's kappa per reviewer pair and per category."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from labels.content import code_key
from labels.metrics import cohen_kappa


@dataclass(frozen=True)
class ReviewerLabel:
    example_id: int
    reviewer: str
    unsafe: bool
    categories: frozenset[str]


@dataclass(frozen=True)
class PairAgreement:
    """Two reviewers over the examples both labelled: safe/unsafe agreement and kappa."""

    reviewer_a: str
    reviewer_b: str
    n: int
    observed: float
    kappa: float  # NaN when chance agreement is total (both always said the same thing)


@dataclass(frozen=True)
class CategoryAgreement:
    """One category over every pair of labels on the same example: present in both or neither."""

    code: str
    n: int
    observed: float
    kappa: float


@dataclass(frozen=True)
class Agreement:
    reviewers: tuple[str, ...]
    pairs: tuple[PairAgreement, ...]
    categories: tuple[CategoryAgreement, ...]

    def to_json(self) -> dict[str, Any]:
        def num(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "reviewers": list(self.reviewers),
            "pairs": [{"reviewer_a": p.reviewer_a, "reviewer_b": p.reviewer_b, "n": p.n,
                       "observed": p.observed, "kappa": num(p.kappa)} for p in self.pairs],
            "categories": [{"code": c.code, "n": c.n, "observed": c.observed,
                            "kappa": num(c.kappa)} for c in self.categories],
        }


def agreement(labels: Iterable[ReviewerLabel]) -> Agreement:
    """Empty pairs and categories when fewer than two reviewers labelled the same example."""
    by_example: dict[int, dict[str, ReviewerLabel]] = defaultdict(dict)
    for label in labels:
        by_example[label.example_id][label.reviewer] = label
    reviewers = sorted({r for labels_ in by_example.values() for r in labels_})
    pair_rows: dict[tuple[str, str], list[tuple[bool, bool]]] = defaultdict(list)
    label_pairs: list[tuple[ReviewerLabel, ReviewerLabel]] = []
    for example_labels in by_example.values():
        for a, b in combinations(sorted(example_labels), 2):
            la, lb = example_labels[a], example_labels[b]
            pair_rows[(a, b)].append((la.unsafe, lb.unsafe))
            label_pairs.append((la, lb))
    pairs = tuple(
        PairAgreement(a, b, len(rows), sum(x == y for x, y in rows) / len(rows),
                      cohen_kappa([x for x, _ in rows], [y for _, y in rows]))
        for (a, b), rows in sorted(pair_rows.items())
    )
    codes = sorted({c for la, lb in label_pairs for c in la.categories | lb.categories},
                   key=code_key)
    categories = []
    for code in codes:
        xs = [code in la.categories for la, _ in label_pairs]
        ys = [code in lb.categories for _, lb in label_pairs]
        categories.append(CategoryAgreement(
            code, len(xs), sum(x == y for x, y in zip(xs, ys, strict=True)) / len(xs), cohen_kappa(xs, ys)))
    return Agreement(tuple(reviewers), pairs, tuple(categories))
