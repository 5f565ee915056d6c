"""The Labeled examples tab as pure functions over `labels.Store`: filters, pages, one example,
its labels and history, agreement and metrics as tables. No gradio; `ui_labels` shows them.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from labels import ExampleFilter, LabelInput, Store, StoredExample
from labels.errors import InvalidLabel
from labels.metrics import evaluate, precision_recall_curve

PAGE_SIZE = 25
LABEL_HEADERS = ["label id", "reviewer", "label", "categories", "note", "model was", "updated"]
HISTORY_HEADERS = ["at", "action", "label id", "by", "reason", "before", "after"]
PAIR_HEADERS = ["reviewer A", "reviewer B", "examples", "agreement", "Cohen's kappa"]
CATEGORY_AGREEMENT_HEADERS = ["category", "label pairs", "agreement", "Cohen's kappa"]
SUMMARY_HEADERS = ["n", "precision", "recall", "F1", "FPR", "AUPRC"]
CONFUSION_HEADERS = ["", "model: safe", "model: unsafe"]
CATEGORY_RATE_HEADERS = ["category", "gold positives", "gold negatives", "FNR", "FPR"]
DISAGREEMENT = {"any": None, "model wrong": True, "model right": False}


@dataclass(frozen=True)
class Page:
    rows: list[list[Any]]
    ids: list[int]
    total: int
    page: int  # 1-based, clamped to the pages there are
    pages: int

    @property
    def caption(self) -> str:
        if not self.total:
            return "No examples match these filters."
        first = (self.page - 1) * PAGE_SIZE + 1
        return (f"Examples {first}–{first + len(self.rows) - 1} of {self.total} "
                f"(page {self.page} of {self.pages}).")


def _text(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def make_filter(*, label: str | None = "any", category: str | None = "",
                disagreement: str | None = "any", model: str | None = "",
                reviewer: str | None = "", since: str | None = "", until: str | None = "",
                text: str | None = "", page: int = 1) -> ExampleFilter:
    if disagreement not in DISAGREEMENT and disagreement is not None:
        raise InvalidLabel(f"Disagreement must be one of {', '.join(DISAGREEMENT)}.")
    return ExampleFilter(
        label=None if label in (None, "", "any") else label, category=_text(category),
        disagreement=DISAGREEMENT.get(disagreement or "any"), model=_text(model),
        reviewer=_text(reviewer), since=_text(since), until=_text(until), text=_text(text),
        limit=PAGE_SIZE, offset=(max(1, int(page or 1)) - 1) * PAGE_SIZE)


def list_page(store: Store, filters: ExampleFilter) -> Page:
    total = store.count_examples(filters)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.offset // PAGE_SIZE + 1, pages)
    filters = ExampleFilter(**{**filters.__dict__, "offset": (page - 1) * PAGE_SIZE})
    summaries = store.list_examples(filters)
    rows = [[s.id, s.created_at[:19].replace("T", " "), s.preview, s.image_count, s.model,
             "unsafe" if s.model_unsafe else "safe", round(s.p_unsafe, 3),
             ", ".join(s.model_categories),
             ", ".join(f"{r}: {g}" for r, g in zip(s.reviewers, s.gold_labels, strict=True)),
             "yes" if s.disagreement else ""] for s in summaries]
    return Page(rows, [s.id for s in summaries], total, page, pages)


LIST_HEADERS = ["id", "created", "preview", "images", "model", "verdict", "p_unsafe",
                "model categories", "labels", "model wrong"]


def parse_id(value: Any) -> int:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise InvalidLabel(f"Enter an example id (a whole number), got {value!r}.") from None
    if number < 1:
        raise InvalidLabel("Example ids start at 1.")
    return number


def next_id(ids: list[int], current: int | None, step: int = 1) -> int:
    """The example after (or before) `current` in the listed page; the first when none is open."""
    if not ids:
        raise InvalidLabel("The list is empty: refresh it or loosen the filters.")
    if current not in ids:
        return ids[0]
    return ids[(ids.index(current) + step) % len(ids)]


def conversation_html(example: StoredExample) -> str:
    """Every turn, escaped, with how many images it carried (the gallery shows them)."""
    parts = []
    for i, message in enumerate(example.messages, start=1):
        content = message.get("content")
        items = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        text = "\n".join(str(c.get("text", "")) for c in items if c.get("type") == "text")
        images = sum(1 for c in items if c.get("type") == "image")
        extra = f' <span class="gl-muted">+ {images} image{"s" if images != 1 else ""}</span>' \
            if images else ""
        role = html.escape(str(message.get("role", "")))
        parts.append(f'<div class="gl-turn"><div class="gl-turn-head"><span class="gl-role '
                     f'gl-role-{role}">{i}. {role}</span>{extra}</div>'
                     f'<div class="gl-turn-text">{html.escape(text)}</div></div>')
    return f'<div id="gl-open-conversation">{"".join(parts)}</div>'


def answer_html(example: StoredExample) -> str:
    out = example.output
    verdict = "unsafe" if out.unsafe else "safe"
    cats = ", ".join(out.categories) or "none"
    policy = ", ".join(example.excluded) or "none"
    return (f'<div class="gl-card gl-card-{verdict}" id="gl-open-answer">'
            f'<div class="gl-card-title">Example #{example.id}: {html.escape(out.model)} '
            f'({html.escape(example.family)}), {html.escape(example.created_at[:19])}</div>'
            f'<div class="gl-verdict gl-verdict-{verdict}">{verdict}</div>'
            f'<div class="gl-row"><span>categories</span><span>{html.escape(cats)}</span></div>'
            f'<div class="gl-row"><span>p_unsafe</span><span>{out.p_unsafe:.4f} (threshold '
            f'{out.threshold:g})</span></div>'
            f'<div class="gl-row"><span>excluded categories</span><span>{html.escape(policy)}'
            f'</span></div><div class="gl-meta">raw output</div>'
            f'<pre class="gl-snippet">{html.escape(out.raw_output)}</pre></div>')


def images(example: StoredExample) -> list[Image.Image]:
    """The example's images, in conversation order, in memory.

    The gallery takes them as they are, so opening an example writes no file of ours (a folder
    per open used to pile up in the temporary directory).
    """
    return [Image.open(io.BytesIO(blob.png)) for blob in example.images]


def write_images(example: StoredExample, folder: str | Path) -> list[str]:
    """The example's images as PNG files in `folder`, in conversation order."""
    folder = Path(folder)
    paths = []
    for i, blob in enumerate(example.images, start=1):
        path = folder / f"example{example.id}_{i}_{blob.sha256[:12]}.png"
        path.write_bytes(blob.png)
        paths.append(str(path))
    return paths


def download_html(url: str, filename: str, count: int, lasts: str) -> str:
    """The one-click link to a fresh export, saying it works once and for how long."""
    return (f'<div class="gl-note" id="gl-export-link"><a href="{html.escape(url)}" '
            f'download="{html.escape(filename)}">Download {html.escape(filename)}</a> '
            f'({count} example{"s" if count != 1 else ""}). The link works once, within '
            f'{html.escape(lasts)}; export again for a new one.</div>')


def label_rows(example: StoredExample) -> list[list[Any]]:
    return [[lb.id, lb.reviewer, lb.label, ", ".join(lb.categories), lb.note,
             "right" if lb.model_was_right else "wrong", lb.updated_at[:19].replace("T", " ")]
            for lb in example.labels]


def _brief(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    cats = ",".join(value.get("categories") or [])
    note = value.get("note") or ""
    return f"{value.get('label', '')}{' ' + cats if cats else ''}{' | ' + note if note else ''}" \
        if "label" in value else json.dumps(value, sort_keys=True)


def history_rows(store: Store, example_id: int) -> list[list[Any]]:
    return [[e.at[:19].replace("T", " "), e.action, e.label_id, e.reviewer, e.reason,
             _brief(e.before), _brief(e.after)] for e in store.label_history(example_id)]


def own_label(example: StoredExample, reviewer: str) -> tuple[str | None, list[str], str]:
    """The reviewer's current (label, categories, note), to prefill the edit form."""
    for lb in example.labels:
        if reviewer and lb.reviewer == reviewer:
            return lb.label, list(lb.categories), lb.note
    return None, [], ""


def category_choices(example: StoredExample) -> list[tuple[str, str]]:
    from guard.core.categories import categories_for

    names = {c.code: c.card_name for c in categories_for(example.family)}
    names.update({c["code"]: c["name"] for c in example.custom if "code" in c})
    codes = [c for c in names if c not in example.excluded]
    return [(f"{c} {names[c]}", c) for c in codes]


def save_label(store: Store, example_id: int, reviewer: str, label: str | None,
               categories: list[str] | None, note: str | None) -> str:
    """Create or edit the reviewer's own label on a stored example; returns what happened."""
    if label not in ("safe", "unsafe"):
        raise InvalidLabel("Pick the label: safe or unsafe.")
    had = any(lb.reviewer == reviewer for lb in store.get_example(example_id).labels)
    stored = store.add_label(example_id, LabelInput(reviewer, label, tuple(categories or ()),
                                                    note or ""))
    return f"{'Edited' if had else 'Added'} {reviewer}'s label #{stored.id}: {stored.label}."


def delete_label(store: Store, example_id: int, label_id: Any, reviewer: str, reason: str
                 ) -> str:
    """Soft-delete a label of the open example, recorded with who and why."""
    if label_id in (None, ""):
        raise InvalidLabel("Pick the label to delete.")
    number = int(label_id)
    label = store.get_label(number)
    if label.example_id != example_id:
        raise InvalidLabel(f"Label {number} belongs to example #{label.example_id}, not the open "
                           f"example #{example_id}.")
    store.delete_label(number, reviewer, reason or "")
    return f"Deleted label #{number} ({label.reviewer}: {label.label}); the history keeps it."


def _num(value: float | None, digits: int = 3) -> Any:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else round(value, digits)


def agreement_tables(store: Store) -> tuple[str, list[list[Any]], list[list[Any]]]:
    """(message, pair rows, category rows); a message alone while fewer than two reviewers overlap."""
    result = store.agreement()
    if not result.pairs:
        return ("Agreement needs two reviewers who labelled the same examples; so far "
                f"{len(result.reviewers)} reviewer{'s' if len(result.reviewers) != 1 else ''} "
                "and no shared example.", [], [])
    pairs = [[p.reviewer_a, p.reviewer_b, p.n, _num(p.observed), _num(p.kappa)]
             for p in result.pairs]
    cats = [[c.code, c.n, _num(c.observed), _num(c.kappa)] for c in result.categories]
    return (f"{len(result.reviewers)} reviewers; Cohen's kappa is n/a where both always gave "
            "the same answer.", pairs, cats)


@dataclass(frozen=True)
class Measured:
    summary: list[list[Any]]
    confusion: list[list[Any]]
    categories: list[list[Any]]
    curve: list[dict[str, float]]  # recall, precision, threshold: the PR curve of p_unsafe
    threshold: str  # the suggestion in words
    report: dict[str, Any]


def measure(store: Store, *, model: str | None = "", reviewer: str | None = "",
            target_fpr: float | None = 0.05) -> Measured:
    target = 0.05 if target_fpr is None else float(target_fpr)
    if not 0.0 <= target <= 1.0:
        raise InvalidLabel(f"The target false-positive rate must be between 0 and 1, got {target}.")
    inputs = store.metric_inputs(reviewer=_text(reviewer), model=_text(model))
    report = evaluate(inputs, target_fpr=target)
    if not report.n:
        raise InvalidLabel("No labels match: save some labels (or loosen the model/reviewer "
                           "filters) before measuring.")
    c = report.confusion
    summary = [[report.n, _num(report.precision), _num(report.recall), _num(report.f1),
                _num(report.false_positive_rate), _num(report.auprc)]]
    confusion = [["gold: safe", c.tn, c.fp], ["gold: unsafe", c.fn, c.tp]]
    cats = [[r.code, r.positives, r.negatives, _num(r.false_negative_rate),
             _num(r.false_positive_rate)] for r in report.categories
            if r.positives or r.negatives]
    prec, rec, thresholds = precision_recall_curve(inputs.y_true, inputs.scores)
    curve = [{"recall": float(r), "precision": float(p),
              "threshold": float(thresholds[i]) if i < len(thresholds) else 1.0}
             for i, (p, r) in enumerate(zip(prec, rec, strict=True))]
    s = report.suggested
    words = ("" if s is None else
             f"Suggested threshold for FPR ≤ {s.target_fpr:g}: **{s.threshold:.4f}** "
             f"(FPR {s.false_positive_rate:.3f}, recall {s.recall:.3f}, precision "
             f"{s.precision:.3f} on these {report.n} labels).")
    return Measured(summary, confusion, cats, curve, words, report.to_json())
