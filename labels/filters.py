"""Browser filters turned into SQL over the examples table (aliased `e`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .errors import LabelsError
from .records import SAFE, UNSAFE, ExampleFilter


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
