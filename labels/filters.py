"""Browser filters turned into SQL over the examples table (aliased `e`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from labels.errors import LabelsError
from labels.records import SAFE, UNSAFE, ExampleFilter


@dataclass(frozen=True)
class ReviewFilter(ExampleFilter):
    """ExampleFilter plus `reviewers_disagree` (records.py's ExampleFilter may absorb it).

    True: two reviewers' active labels on the example differ in verdict or categories.
    False: two or more reviewers labelled it and all agree. None: no filter.
    """

    reviewers_disagree: bool | None = None
    exclude_ids: tuple[int, ...] = ()  # examples left out (a blind reader's, say)


# Labels are normalised on the way in (sorted codes, one JSON spelling), so comparing the
# stored text compares the category sets.
_REVIEWERS_DISAGREE = (
    "EXISTS (SELECT 1 FROM labels a JOIN labels b ON b.example_id = a.example_id "
    "AND b.id > a.id AND b.deleted_at IS NULL WHERE a.example_id = e.id "
    "AND a.deleted_at IS NULL AND (a.label <> b.label OR a.categories <> b.categories))")


def where_clause(filters: ExampleFilter, quote_fts: Callable[[str], str]
                 ) -> tuple[str, dict[str, Any]]:
    """The WHERE clause over `examples e` and its named parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    label_clauses = []
    if filters.label is not None:
        if filters.label not in (SAFE, UNSAFE):
            raise LabelsError(f"The label filter must be 'safe' or 'unsafe', got {filters.label!r}.")
        label_clauses.append("l.label = :label")
        params["label"] = filters.label
    if filters.category is not None:
        label_clauses.append(
            "EXISTS (SELECT 1 FROM json_each(l.categories) WHERE value = :category)")
        params["category"] = filters.category.strip().upper()
    if filters.reviewer is not None:
        label_clauses.append("l.reviewer = :reviewer")
        params["reviewer"] = filters.reviewer
    if filters.disagreement:
        label_clauses.append("l.model_was_right = 0")
    if label_clauses or filters.disagreement is False:
        clauses.append("EXISTS (SELECT 1 FROM labels l WHERE l.example_id = e.id AND "
                       + " AND ".join(["l.deleted_at IS NULL", *label_clauses]) + ")")
    if filters.disagreement is False:
        clauses.append("NOT EXISTS (SELECT 1 FROM labels l WHERE l.example_id = e.id AND "
                       "l.deleted_at IS NULL AND l.model_was_right = 0)")
    reviewers_disagree = getattr(filters, "reviewers_disagree", None)
    if reviewers_disagree:
        clauses.append(_REVIEWERS_DISAGREE)
    elif reviewers_disagree is False:
        clauses.append("(SELECT count(*) FROM labels l WHERE l.example_id = e.id AND "
                       f"l.deleted_at IS NULL) >= 2 AND NOT {_REVIEWERS_DISAGREE}")
    exclude = getattr(filters, "exclude_ids", ())
    if exclude:
        clauses.append("e.id NOT IN (SELECT value FROM json_each(:exclude_ids))")
        params["exclude_ids"] = json.dumps(sorted(int(i) for i in exclude))
    if filters.model is not None:
        clauses.append("e.model = :model")
        params["model"] = filters.model
    for name, op in (("since", ">="), ("until", "<")):
        value = getattr(filters, name)
        if value is not None:
            try:
                parsed = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise LabelsError(f"{name} must be an ISO date such as 2025-05-01, "
                                  f"got {value!r}.") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            clauses.append(f"e.created_at {op} :{name}")
            params[name] = parsed.astimezone(UTC).isoformat(timespec="microseconds")
    if filters.text and filters.text.strip():
        params["query"] = quote_fts(filters.text)
        clauses.append(
            "(e.id IN (SELECT rowid FROM examples_fts WHERE examples_fts MATCH :query) OR "
            "e.id IN (SELECT l.example_id FROM labels_fts f JOIN labels l ON l.id = f.rowid "
            "WHERE labels_fts MATCH :query AND l.deleted_at IS NULL))")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
