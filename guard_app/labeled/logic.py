"""The Labeled examples tab as pure functions over `labels.Store`: filters, pages, one example,
its labels and history, agreement, disagreements, exports and metrics as tables. No gradio;
`tab.py` shows them.
"""

from __future__ import annotations

import html
import io
import json
import math
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from guard.core.categories import Family, categories_for
from guard.eval.thresholds import TARGETS, Suggestion, show_threshold, suggest
from guard_app.exports import PREFIX
from labels import ExampleFilter, ExampleSummary, LabelInput, MetricInputs, Store, StoredExample
from labels import final as finals
from labels import prompt_guard as pg
from labels.content import code_key
from labels.errors import InvalidLabel, LabelsError
from labels.export import FORMATS, export
from labels.filters import ReviewFilter
from labels.metrics import CategoryRates, category_rates, evaluate, precision_recall_curve
from labels.queues import blind_examples
from labels.store import MAX_PAGE

PAGE_SIZE = 25
PREVIEW_CHARS = 60
LABEL_HEADERS = ["label id", "reviewer", "label", "categories", "note", "model was", "updated"]
HISTORY_HEADERS = ["at", "action", "label id", "by", "reason", "before", "after"]
PAIR_HEADERS = ["reviewer A", "reviewer B", "examples", "agreement", "Cohen's kappa"]
CATEGORY_AGREEMENT_HEADERS = ["category", "label pairs", "agreement", "Cohen's kappa"]
DISAGREEMENT_HEADERS = ["id", "preview", "labels", "differ on"]
SUMMARY_HEADERS = ["n", "precision", "recall", "F1", "FPR", "AUPRC"]
CONFUSION_HEADERS = ["", "model: safe", "model: unsafe"]
CATEGORY_RATE_HEADERS = ["family", "category", "gold positives", "gold negatives", "FNR", "FPR"]
# What a reviewer reads first: the model's verdict, the gold labels and who disagrees; the
# bookkeeping (id, dates, the text itself) after. Short headers keep it within 1366 px.
LIST_HEADERS = ["verdict", "gold", "reviewers", "disagree", "p_unsafe", "categories", "id",
                "created", "preview", "images", "model"]
# The one "Disagreement" filter: (model was wrong?, reviewers disagree?) for each choice. One
# input rather than two keeps /list_labels' positional arguments as they were.
DISAGREEMENT = {"any": (None, None), "model wrong": (True, None), "model right": (False, None),
                "reviewers disagree": (None, True), "reviewers agree": (None, False)}


class EndOfPage(LabelsError):
    """Next (or previous) asked for past the last (or first) example of the listed page."""


@dataclass(frozen=True)
class Reader:
    """Who reads, and the examples whose other reviewers' labels and notes they may not see
    yet: blind until done (each belongs to an open queue item they have not labelled or
    skipped). Leads see everything."""

    name: str
    lead: bool = False
    hidden: frozenset[int] = frozenset()

    @classmethod
    def of(cls, store: Store, name: str, *, lead: bool = False) -> Reader:
        return cls(name, lead, frozenset() if lead else blind_examples(store, name))

    def sees(self, example: StoredExample) -> StoredExample:
        """The example as this reader may see it: on a hidden one, their own label only."""
        if example.id not in self.hidden:
            return example
        return replace(example, labels=tuple(lb for lb in example.labels
                                             if lb.reviewer == self.name), final=None)


EVERYONE = Reader("", lead=True)  # what a caller that names no reader gets: everything


def _label_filters(filters: ExampleFilter) -> bool:
    """Whether a filter reads the labels (so a hidden example must not match through them)."""
    return any(v not in (None, "") for v in (
        filters.label, filters.category, filters.disagreement, filters.reviewer, filters.text,
        getattr(filters, "reviewers_disagree", None)))


def _without_hidden(filters: ReviewFilter, reader: Reader) -> ReviewFilter:
    if not reader.hidden:
        return filters
    return replace(filters, exclude_ids=tuple(sorted(set(filters.exclude_ids) | reader.hidden)))


def _masked(s: ExampleSummary, reader: Reader) -> ExampleSummary:
    if s.id not in reader.hidden:
        return s
    mine = [(g, r) for g, r in zip(s.gold_labels, s.reviewers, strict=True) if r == reader.name]
    return replace(s, gold_labels=tuple(g for g, _ in mine), reviewers=tuple(r for _, r in mine),
                   disagreement=False)


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
                text: str | None = "", page: int = 1) -> ReviewFilter:
    if disagreement not in DISAGREEMENT and disagreement is not None:
        raise InvalidLabel(f"Disagreement must be one of {', '.join(DISAGREEMENT)}.")
    model_wrong, reviewers_disagree = DISAGREEMENT[disagreement or "any"]
    return ReviewFilter(
        label=None if label in (None, "", "any") else label, category=_text(category),
        disagreement=model_wrong, reviewers_disagree=reviewers_disagree, model=_text(model),
        reviewer=_text(reviewer), since=_text(since), until=_text(until), text=_text(text),
        limit=PAGE_SIZE, offset=(max(1, int(page or 1)) - 1) * PAGE_SIZE)


def describe(filters: ExampleFilter) -> str:
    """The filters in words ("gold label unsafe, reviewers disagree"); "" when none is set."""
    parts = [f"gold label {filters.label}" if filters.label else "",
             f"category {filters.category}" if filters.category else "",
             {True: "model wrong", False: "model right"}.get(filters.disagreement, ""),
             {True: "reviewers disagree", False: "reviewers agree"}.get(
                 getattr(filters, "reviewers_disagree", None), ""),
             f"model {filters.model}" if filters.model else "",
             f"reviewer {filters.reviewer}" if filters.reviewer else "",
             f"since {filters.since}" if filters.since else "",
             f"before {filters.until}" if filters.until else "",
             f'text "{filters.text}"' if filters.text else ""]
    return ", ".join(p for p in parts if p)


def _short(text: str, limit: int = PREVIEW_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _split(store: Store, filters: ReviewFilter, summaries: list[ExampleSummary]) -> set[int]:
    """The listed examples whose reviewers disagree among themselves.

    The summaries do not carry the labels' categories, so this asks the store once more, for
    the same filters plus "reviewers disagree", within the page's span of creation times (a
    page's worth of rows, not the whole table), and keeps the page's ids. The creation times
    are ISO strings in UTC, so the smallest string is the oldest.
    """
    listed = {s.id for s in summaries}
    if filters.reviewers_disagree is not None:
        return listed if filters.reviewers_disagree else set()
    if not any(len(s.reviewers) > 1 for s in summaries):
        return set()
    newest = datetime.fromisoformat(max(s.created_at for s in summaries))
    window = replace(filters, reviewers_disagree=True, limit=MAX_PAGE, offset=0,
                     since=min(s.created_at for s in summaries),
                     until=(newest + timedelta(microseconds=1)).isoformat())
    return listed & {s.id for s in store.list_examples(window)}


def _list_row(s: ExampleSummary, split: bool) -> list[Any]:
    # "disagree": with the model (some reviewer says it was wrong), among the reviewers, or both.
    disagree = ", ".join(w for w, on in (("model", s.disagreement), ("reviewers", split)) if on)
    return ["unsafe" if s.model_unsafe else "safe", ", ".join(s.gold_labels),
            ", ".join(s.reviewers), disagree, round(s.p_unsafe, 3),
            ", ".join(s.model_categories), s.id, s.created_at[:16].replace("T", " "),
            _short(s.preview), s.image_count, s.model.rsplit("/", 1)[-1]]


def list_page(store: Store, filters: ReviewFilter, reader: Reader = EVERYONE) -> Page:
    if _label_filters(filters):
        filters = _without_hidden(filters, reader)
    total = store.count_examples(filters)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.offset // PAGE_SIZE + 1, pages)
    filters = replace(filters, offset=(page - 1) * PAGE_SIZE)
    summaries = [_masked(s, reader) for s in store.list_examples(filters)]
    split = _split(store, filters, summaries) - reader.hidden
    rows = [_list_row(s, s.id in split) for s in summaries]
    return Page(rows, [s.id for s in summaries], total, page, pages)


def parse_id(value: Any) -> int:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise InvalidLabel(f"Enter an example id (a whole number), got {value!r}.") from None
    if number < 1:
        raise InvalidLabel("Example ids start at 1.")
    return number


def next_id(ids: list[int], current: int | None, step: int = 1) -> int:
    """The example after (or before) `current` in the listed page; the first when none is open.

    It stops at either end of the page (EndOfPage) rather than wrapping round unnoticed.
    """
    if not ids:
        raise InvalidLabel("The list is empty: refresh it or loosen the filters.")
    if current not in ids:
        return ids[0]
    index = ids.index(current) + step
    if index >= len(ids):
        raise EndOfPage("Last example of this page. Turn the page (Page ▶) for more.")
    if index < 0:
        raise EndOfPage("First example of this page. Turn the page (◀ Page) for earlier ones.")
    return ids[index]


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
    if not out.judged:
        return (f'<div class="gl-card" id="gl-open-answer"><div class="gl-card-title">Example '
                f'#{example.id}: {html.escape(out.model)} ({html.escape(example.family)}), '
                f'{html.escape(example.created_at[:19])}</div><div class="gl-verdict">not judged'
                '</div><div class="gl-meta">The model gave no answer (a failed row or an '
                f'imported conversation); model metrics leave it out.</div>{final_html(example)}'
                f'<pre class="gl-snippet">{html.escape(out.raw_output)}</pre></div>')
    verdict = "unsafe" if out.unsafe else "safe"
    cats = named(example, out.categories) or "none"
    policy = ", ".join(example.excluded) or "none"
    return (f'<div class="gl-card gl-card-{verdict}" id="gl-open-answer">'
            f'<div class="gl-card-title">Example #{example.id}: {html.escape(out.model)} '
            f'({html.escape(example.family)}), {html.escape(example.created_at[:19])}</div>'
            f'<div class="gl-verdict gl-verdict-{verdict}">{verdict}</div>'
            f'<div class="gl-row"><span>categories</span><span>{html.escape(cats)}</span></div>'
            f'<div class="gl-row"><span>p_unsafe</span><span>{out.p_unsafe:.4f} (threshold '
            f'{out.threshold:g})</span></div>'
            f'<div class="gl-row"><span>excluded categories</span><span>{html.escape(policy)}'
            f'</span></div>{final_html(example)}<div class="gl-meta">raw output</div>'
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


def download_html(url: str, filename: str, count: int, lasts: str, noun: str = "example"
                  ) -> str:
    """The one-click link to a fresh export, saying it works once and for how long."""
    return (f'<div class="gl-note" id="gl-export-link"><a href="{html.escape(url)}" '
            f'download="{html.escape(filename)}">Download {html.escape(filename)}</a> '
            f'({count} {noun}{"s" if count != 1 else ""}). The link works once, within '
            f'{html.escape(lasts)}; export again for a new one.</div>')


def label_rows(example: StoredExample) -> list[list[Any]]:
    def model_was(lb: Any) -> str:
        if not example.output.judged:
            return "not judged"
        return "right" if lb.model_was_right else "wrong"

    return [[lb.id, lb.reviewer, lb.label,
             named(example, lb.categories) or ("none fits" if lb.none_fits else ""), lb.note,
             model_was(lb), lb.updated_at[:19].replace("T", " ")] for lb in example.labels]


def final_html(example: StoredExample) -> str:
    """The example's final label: agreed by whom, or decided by which lead and why; or why
    there is none yet."""
    final = example.final
    if final is None:
        return ('<div class="gl-row" id="gl-open-final"><span>final label</span><span>none yet '
                '(fewer reviews than the overlap, or reviewers disagree: a lead resolves it)'
                '</span></div>')
    cats = named(example, final.categories) or ("none fits" if final.none_fits else "")
    how = (f"decided by lead {final.decided_by}: {final.reason}" if final.decided_by
           else f"agreed by {', '.join(final.reviewers)}")
    return (f'<div class="gl-row" id="gl-open-final"><span>final label</span><span>'
            f'{html.escape(final.label)}{" " + html.escape(cats) if cats else ""} '
            f'({html.escape(how)})</span></div>')


def _brief(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    cats = ",".join(value.get("categories") or [])
    note = value.get("note") or ""
    return f"{value.get('label', '')}{' ' + cats if cats else ''}{' | ' + note if note else ''}" \
        if "label" in value else json.dumps(value, sort_keys=True)


def history_rows(store: Store, example_id: int, reader: Reader = EVERYONE) -> list[list[Any]]:
    """Every change of the example's labels, then of its final label (a blind reader: their
    own changes only)."""
    hidden = example_id in reader.hidden
    rows = [[e.at[:19].replace("T", " "), e.action, e.label_id, e.reviewer, e.reason,
             _brief(e.before), _brief(e.after)] for e in store.label_history(example_id)
            if not hidden or e.reviewer == reader.name]
    if not hidden:
        rows += [[e["at"][:19].replace("T", " "), f"final: {e['action']}", "", e["by"] or "",
                  e["reason"] or "", _brief(e["before"]), _brief(e["after"])]
                 for e in finals.final_history(store, example_id)]
    return rows + _prompt_guard_history(store, example_id, reader)


def _prompt_guard_history(store: Store, example_id: int, reader: Reader) -> list[list[Any]]:
    """The Prompt Guard labels' changes, per message (a blind reader: their own only)."""
    hidden = example_id in reader.hidden

    def said(value: dict[str, Any] | None, index: int) -> str:
        if not value:
            return ""
        return f"message {index + 1}: {'malicious' if value['malicious'] else 'benign'}"

    return [[e["at"][:19].replace("T", " "),
             f"prompt guard: {e['action']}" if e["label_id"] else f"prompt guard final: "
             f"{e['action']}", e["label_id"] or "", e["by"] or "", e["reason"] or "",
             said(e["before"], e["message_index"]), said(e["after"], e["message_index"])]
            for e in pg.history(store, example_id)
            if not hidden or (e["label_id"] and e["by"] == reader.name)]


def own_label(example: StoredExample, reviewer: str) -> tuple[str | None, list[str], str]:
    """The reviewer's current (label, categories, note), to prefill the edit form."""
    for lb in example.labels:
        if reviewer and lb.reviewer == reviewer:
            return lb.label, list(lb.categories), lb.note
    return None, [], ""


def category_names(example: StoredExample) -> dict[str, str]:
    """Code -> name as the example's own family (and its custom categories) name them: S5 is
    Specialized Advice for Llama Guard 2, Defamation for 3 and 4."""
    names = {c.code: c.card_name for c in categories_for(example.family)}
    names.update({c["code"]: c["name"] for c in example.custom if "code" in c})
    return names


def named(example: StoredExample, codes: tuple[str, ...] | list[str]) -> str:
    """'S5 Specialized Advice, S7 …' in the example's family's words; unknown codes bare."""
    names = category_names(example)
    return ", ".join(f"{c} {names[c]}" if c in names else c for c in codes)


def category_choices(example: StoredExample) -> list[tuple[str, str]]:
    names = category_names(example)
    codes = [c for c in names if c not in example.excluded]
    return [(f"{c} {names[c]}", c) for c in codes]


def save_label(store: Store, example_id: int, reviewer: str, label: str | None,
               categories: list[str] | None, note: str | None, none_fits: bool = False) -> str:
    """Create or edit the reviewer's own label on a stored example; returns what happened."""
    if label not in ("safe", "unsafe"):
        raise InvalidLabel("Pick the label: safe or unsafe.")
    had = any(lb.reviewer == reviewer for lb in store.get_example(example_id).labels)
    stored = store.add_label(example_id, LabelInput(reviewer, label, tuple(categories or ()),
                                                    note or "", bool(none_fits)))
    return f"{'Edited' if had else 'Added'} {reviewer}'s label #{stored.id}: {stored.label}."


def delete_label(store: Store, example_id: int, label_id: Any, reviewer: str, reason: str,
                 lead: bool = False) -> str:
    """Soft-delete a label of the open example, recorded with who and why: the reviewer's own,
    or anyone's by a lead. A queue label's item opens again."""
    if label_id in (None, ""):
        raise InvalidLabel("Pick the label to delete.")
    number = int(label_id)
    label = store.get_label(number)
    if label.example_id != example_id:
        raise InvalidLabel(f"Label {number} belongs to example #{label.example_id}, not the open "
                           f"example #{example_id}.")
    store.delete_label(number, reviewer, reason or "", lead=lead)
    return f"Deleted label #{number} ({label.reviewer}: {label.label}); the history keeps it."


EXPORT_SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "llama-guard": ".jsonl",
                 "prompt-guard": ".jsonl"}


def export_file(store: Store, fmt: str, filters: ExampleFilter | None = None,
                folder: str | Path | None = None, reader: Reader = EVERYONE,
                labels: str = finals.FINAL) -> tuple[str, int]:
    """Write what `filters` lists (every page; all examples when None); returns (path, count).

    With no `folder`, a fresh temporary one that the caller hands to `exports.Downloads`; it is
    deleted here when the export fails.
    """
    if fmt not in FORMATS:
        raise InvalidLabel(f"Unknown export format {fmt!r}. Use one of {', '.join(FORMATS)}.")
    fresh = folder is None
    folder = Path(folder or tempfile.mkdtemp(prefix=PREFIX))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"guard_lab_{fmt}_{time.strftime('%Y%m%d-%H%M%S')}{EXPORT_SUFFIX[fmt]}"
    chosen = filters if filters and describe(filters) else None
    if reader.hidden:  # a blind reader's export leaves out what they may not see yet
        chosen = _without_hidden(chosen if isinstance(chosen, ReviewFilter) else
                                 ReviewFilter(**vars(chosen)) if chosen else ReviewFilter(),
                                 reader)
    try:
        count = export(store, fmt, path, chosen, labels=labels)
    except BaseException:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return str(path), count


def unit(fmt: str) -> str:
    """What an export of `fmt` counts: fine-tuning data has a row per prompt with an answer."""
    return "training row" if fmt in ("llama-guard", "prompt-guard") else "example"


def exported(count: int, fmt: str, filters: ExampleFilter | None) -> str:
    """'Exported 3 examples (filtered: reviewers disagree).' (fine-tuning data counts rows)."""
    noun = unit(fmt)
    said = describe(filters) if filters else ""
    return (f"Exported {count} {noun}{'s' if count != 1 else ''} "
            f"({'filtered: ' + said if said else 'no filter: every example'}).")


def _num(value: float | None, digits: int = 3) -> Any:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else round(value, digits)


def agreement_tables(store: Store, reader: Reader = EVERYONE
                     ) -> tuple[str, list[list[Any]], list[list[Any]]]:
    """(message, pair rows, category rows); a message alone while fewer than two reviewers overlap."""
    result = store.agreement(exclude=reader.hidden)
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
class Disagreements:
    """The examples whose reviewers disagree (verdict or categories), newest first."""

    rows: list[list[Any]]
    ids: list[int]
    total: int  # all of them; `rows` holds the newest `limit`
    items: list[dict[str, Any]]

    @property
    def caption(self) -> str:
        if not self.total:
            return "No example where reviewers disagree."
        shown = f" (the newest {len(self.rows)} below)" if len(self.rows) < self.total else ""
        return (f"Reviewers disagree on **{self.total}** example"
                f"{'s' if self.total != 1 else ''}{shown}. Select one to open it.")

    def to_json(self) -> dict[str, Any]:
        return {"count": self.total, "examples": self.items}


def disagreements(store: Store, limit: int = 100, reader: Reader = EVERYONE) -> Disagreements:
    filters = _without_hidden(ReviewFilter(reviewers_disagree=True, limit=limit), reader)
    rows, items = [], []
    for summary in store.list_examples(filters):
        labels = store.get_example(summary.id).labels
        differ = "verdict" if len({lb.label for lb in labels}) > 1 else "categories"
        rows.append([summary.id, _short(summary.preview), "; ".join(
            f"{lb.reviewer}: {lb.label} {','.join(lb.categories)}".rstrip() for lb in labels),
            differ])
        items.append({"id": summary.id, "preview": summary.preview, "family": summary.family,
                      "differ_on": differ,
                      "labels": [{"reviewer": lb.reviewer, "label": lb.label,
                                  "categories": list(lb.categories)} for lb in labels]})
    return Disagreements(rows, [r[0] for r in rows], store.count_examples(filters), items)


@dataclass(frozen=True)
class Measured:
    summary: list[list[Any]]
    confusion: list[list[Any]]
    categories: list[list[Any]]
    curve: list[dict[str, float]]  # recall, precision, threshold: the PR curve of p_unsafe
    threshold: str  # the suggestion in words
    report: dict[str, Any]


def measure(store: Store, *, model: str | None = "", reviewer: str | None = "",
            target_fpr: float | None = 0.05, labels: str | None = finals.FINAL,
            target: str | None = "fpr", threshold: float | str | None = None) -> Measured:
    """The model against the final labels (`labels`: or every label, or one reviewer's; a
    `reviewer` named means theirs). `target_fpr` is the target's value: a false-positive rate
    (at most), or with `target="recall"` a recall (at least); the suggested threshold comes
    with what it costs (guard.eval.thresholds). A typed `threshold` reads the overall numbers
    at p_unsafe >= it instead of the model's own verdicts."""
    kind = (target or "fpr").strip().lower()
    if kind not in TARGETS:
        raise InvalidLabel(f"The target must be one of {', '.join(TARGETS)}, got {target!r}.")
    what = "false-positive rate" if kind == "fpr" else "recall"
    try:
        value = 0.05 if target_fpr is None else float(target_fpr)
    except (TypeError, ValueError):
        raise InvalidLabel(f"The target {what} must be a number between 0 and 1, got "
                           f"{target_fpr!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidLabel(f"The target {what} must be between 0 and 1, got {value:g}.")
    at = typed_threshold(threshold)
    model, reviewer = _text(model), _text(reviewer)
    inputs = store.metric_inputs(reviewer=reviewer, model=model, labels=labels or finals.FINAL)
    stored = inputs  # the model's own verdicts: the per-category rates read these
    if at is not None:  # the stored scores at the typed threshold (no model runs)
        flagged = tuple(score >= at for score in inputs.scores)
        inputs = replace(inputs, y_pred=flagged, pred_categories=tuple(
            codes if unsafe else frozenset()
            for codes, unsafe in zip(inputs.pred_categories, flagged, strict=True)))
    report = evaluate(inputs, target_fpr=value if kind == "fpr" else None)
    if not report.n:
        raise InvalidLabel("No labels match: save some labels (or loosen the model/reviewer "
                           "filters) before measuring. By default only final labels count "
                           "(reviewers agreed, or a lead decided); choose 'all' to see every "
                           "label.")
    c = report.confusion
    summary = [[report.n, _num(report.precision), _num(report.recall), _num(report.f1),
                _num(report.false_positive_rate), _num(report.auprc)]]
    confusion = [["gold: safe", c.tn, c.fp], ["gold: unsafe", c.fn, c.tp]]
    by_family = [(family, names, r) for family, names, rates
                 in _rates_by_family(store, model, reviewer, stored, labels) for r in rates]
    cats = [[family, f"{r.code} {names[r.code]}" if r.code in names else r.code, r.positives,
             r.negatives, _num(r.false_negative_rate), _num(r.false_positive_rate)]
            for family, names, r in by_family]
    prec, rec, thresholds = precision_recall_curve(inputs.y_true, inputs.scores)
    curve = [{"recall": float(r), "precision": float(p),
              "threshold": float(thresholds[i]) if i < len(thresholds) else 1.0}
             for i, (p, r) in enumerate(zip(prec, rec, strict=True))]
    found = suggest(inputs.y_true, inputs.scores, kind, value)
    words = suggestion_words(found)
    if at is not None:
        words = (f"Overall and confusion matrix at the typed threshold **{show_threshold(at)}** "
                 "(from the stored p_unsafe; the per-category rates below stay at the model's own "
                 "verdicts).\n\n"
                 + words)
    as_json = report.to_json()  # its "categories" add up the families' codes: these do not
    as_json["suggestion"] = found.to_json()
    as_json["threshold"] = at
    as_json["categories"] = [
        {"family": family, "code": r.code, "name": names.get(r.code, ""),
         "positives": r.positives, "negatives": r.negatives,
         "fnr": None if math.isnan(r.false_negative_rate) else r.false_negative_rate,
         "fpr": None if math.isnan(r.false_positive_rate) else r.false_positive_rate}
        for family, names, r in by_family]
    return Measured(summary, confusion, cats, curve, words, as_json)


def suggestion_words(found: Suggestion) -> str:
    """A suggested threshold in words: what it costs, and each warning on a line of its own."""
    bound = "FPR ≤" if found.target == "fpr" else "recall ≥"
    head = (f"Suggested threshold for {bound} {found.value:g}: "
            f"**{show_threshold(found.threshold)}** (precision {found.precision:.3f}, recall "
            f"{found.recall:.3f}, FPR {found.fpr:.3f} on {found.positives} unsafe and "
            f"{found.negatives} safe labels). Type it under Threshold and press Enter to read "
            "the numbers at it.")
    return "\n\n".join([head, *(f"⚠ {w}" for w in found.warnings)])


def typed_threshold(value: float | str | None) -> float | None:
    """A threshold typed in Measure (empty: the model's own verdicts), from 0 to 1."""
    if value is None or not str(value).strip():
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        raise InvalidLabel(f"Type a threshold from 0 to 1, e.g. 0.003; got {value!r}.") from None
    if not 0.0 <= number <= 1.0:  # also NaN
        raise InvalidLabel(f"The threshold must be from 0 to 1, got {value!r}.")
    return number


def _families_by_model(store: Store, model: str | None, reviewer: str | None
                       ) -> dict[str, set[str]]:
    """model -> the families of the labelled examples it judged (those `measure` reads)."""
    found: dict[str, set[str]] = defaultdict(set)
    filters = ExampleFilter(model=model, reviewer=reviewer, limit=MAX_PAGE)
    while True:
        page = store.list_examples(filters)
        for s in page:
            if s.reviewers:
                found[s.model].add(s.family)
        if len(page) < MAX_PAGE:
            return found
        filters = replace(filters, offset=filters.offset + MAX_PAGE)


def _conflict(families: set[str]) -> bool:
    """Whether some code means different things in these families (S5 in Llama Guard 2 and 4)."""
    meanings: dict[str, set[str]] = defaultdict(set)
    for family in families:
        for c in categories_for(family):
            meanings[c.code].add(c.card_name)
    return any(len(names) > 1 for names in meanings.values())


def _rates_by_family(store: Store, model: str | None, reviewer: str | None,
                     inputs: MetricInputs, labels: str | None = finals.FINAL
                     ) -> list[tuple[str, dict[str, str], tuple[CategoryRates, ...]]]:
    """Per-category rates for each family apart: (family, code -> name, rates) per family.

    A code names one hazard in Llama Guard 2 and another in 3 and 4, so one table over both
    would add up unrelated categories.
    """
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, families in _families_by_model(store, model, reviewer).items():
        if _conflict(families):
            labels = " and ".join(sorted(Family(f).label for f in families))
            raise InvalidLabel(f"{name} judged examples of {labels}, whose category codes mean "
                               "different things, and its name cannot tell them apart: "
                               "filter by a model that judged one family only.")
        groups[tuple(sorted(families))].append(name)
    result = []
    for families, models in sorted(groups.items()):
        parts = [inputs] if len(groups) == 1 else [
            store.metric_inputs(reviewer=reviewer, model=m, labels=labels or finals.FINAL)
            for m in models]
        gold = tuple(g for p in parts for g in p.gold_categories)
        pred = tuple(g for p in parts for g in p.pred_categories)
        table = categories_for(families[0])
        codes = sorted({c.code for c in table}.union(*gold, *pred), key=code_key)
        label = " + ".join(Family(f).label for f in families)
        result.append((label, {c.code: c.card_name for c in table},
                       category_rates(gold, pred, codes)))
    return result


# ---- the lead's disagreements queue (labels.final) ----

LEAD_HEADERS = ["example", "queue", "opened", "labels", "preview"]


def check_lead(reader: Reader, action: str) -> None:
    if not reader.lead:
        raise InvalidLabel(f"Only a lead may {action} (the server's GUARD_LAB_LEADS names "
                           "them). Ask one of them.")


def lead_queue(store: Store, reader: Reader, queue: str | None = None
               ) -> tuple[list[list[Any]], list[int], list[dict[str, Any]]]:
    """The open disagreements, oldest first: (rows, example ids, JSON items). Leads only."""
    check_lead(reader, "see the disagreements queue")
    found = finals.disagreements(store, queue=_text(queue))
    rows, items = [], []
    for d in found:
        votes = "; ".join(f"{lb['reviewer']}: {lb['label']} {','.join(lb['categories'])}".rstrip()
                          + (" (none fits)" if lb["none_fits"] else "") for lb in d.labels)
        example = store.get_example(d.example_id)
        preview = _short(" ".join(t.text for t in example.conversation.turns))
        rows.append([d.example_id, d.queue or "", d.opened_at[:16].replace("T", " "), votes,
                     preview])
        items.append(d.to_json())
    return rows, [d.example_id for d in found], items


def resolve(store: Store, reader: Reader, example_id: Any, label: str | None,
            categories: list[str] | None, none_fits: bool, reason: str | None) -> str:
    """A lead's final label for an example, recorded with who, when and why."""
    check_lead(reader, "resolve disagreements")
    if label not in ("safe", "unsafe"):
        raise InvalidLabel("Pick the final label: safe or unsafe.")
    decided = finals.resolve(store, parse_id(example_id), reader.name, label,
                             tuple(categories or ()), reason or "", none_fits=bool(none_fits))
    cats = ",".join(decided.categories) or ("none fits" if decided.none_fits else "")
    return (f"Example #{decided.example_id}: final label {decided.label}"
            f"{' ' + cats if cats else ''}, decided by {decided.decided_by}.")


REVIEWER_STATS_HEADERS = ["reviewer", "labelled", "per hour", "skipped", "skip rate",
                          "with a final label", "agree with final"]
QUEUE_STATS_HEADERS = ["queue", "items", "complete", "progress", "labels", "skips",
                       "open disagreements"]


def lead_view(store: Store, reader: Reader) -> tuple[list[list[Any]], list[list[Any]],
                                                      dict[str, Any]]:
    """Per reviewer and per queue, for leads: (reviewer rows, queue rows, JSON)."""
    check_lead(reader, "see the lead's view")
    people = finals.reviewer_stats(store)
    queues_ = finals.queue_stats(store)

    def pct(value: float | None) -> Any:
        return "n/a" if value is None else f"{value:.0%}"

    reviewers = [[r.reviewer, r.labelled, "n/a" if r.per_hour is None else r.per_hour,
                  r.skipped, pct(r.skip_rate), r.with_final, pct(r.agree_final)]
                 for r in people]
    by_queue = [[q.queue, q.items, q.complete, pct(q.complete / q.items if q.items else None),
                 q.labels, q.skips, q.open_disagreements] for q in queues_]
    return reviewers, by_queue, {"reviewers": [r.to_json() for r in people],
                                 "queues": [q.to_json() for q in queues_]}


# ---- Prompt Guard labels of the open example (labels/prompt_guard.py) ----

PROMPT_GUARD_HEADERS = ["message", "text", "Prompt Guard score", "labels", "final"]


def prompt_guard_table(store: Store, example: StoredExample, reader: Reader = EVERYONE
                       ) -> list[list[Any]]:
    """One row per user message: Prompt Guard's stored score, the reviewers' benign / malicious
    labels (a blind reader: their own only) and the final label."""
    hidden = example.id in reader.hidden
    labels = [x for x in pg.labels_of(store, example.id) if not hidden or x.reviewer == reader.name]
    finals_by = {} if hidden else pg.finals_of(store, example.id)
    rows = []
    for message in pg.judged_messages(example.messages, example.output.prompt_guard_scores):
        score = "" if message.score is None else f"{message.score:.3f}"
        votes = "; ".join(f"{x.reviewer}: {x.value}" for x in labels
                          if x.message_index == message.index)
        final = finals_by.get(message.index)
        said = "" if hidden else "none yet" if final is None else (
            f"{'malicious' if final.malicious else 'benign'} ("
            + (f"decided by lead {final.decided_by}: {final.reason}" if final.decided_by
               else f"agreed by {', '.join(final.reviewers)}") + ")")
        rows.append([message.index + 1, _short(message.text), score, votes, said])
    return rows


def prompt_guard_choices(example: StoredExample) -> list[tuple[str, int]]:
    """The user messages a Prompt Guard label may be about: (what the page shows, index)."""
    return [(f"Message {m.index + 1}: {_short(m.text, 50)}", m.index)
            for m in pg.judged_messages(example.messages)]


def own_prompt_guard(store: Store, example_id: int, reviewer: str) -> tuple[list[int], list[int]]:
    """The messages the reviewer labelled (malicious, benign), to prefill the edit form."""
    mine = pg.labels_of(store, example_id, reviewer) if reviewer else []
    return ([x.message_index for x in mine if x.malicious],
            [x.message_index for x in mine if not x.malicious])


def save_prompt_guard(store: Store, example_id: int, reviewer: str, malicious: list[Any] | None,
                      benign: list[Any] | None) -> str:
    """Save the reviewer's Prompt Guard labels of a stored example's user messages (ticked
    malicious or benign; one in neither keeps what it had). An edit keeps the model,
    preprocessing and score the message was labelled against (else the example's stored
    score)."""
    bad = {pg.index_of(i) for i in malicious or ()}
    good = {pg.index_of(i) for i in benign or ()}
    if bad & good:
        raise InvalidLabel(f"Message {min(bad & good) + 1} is ticked both malicious and benign; "
                           "untick one.")
    if not bad | good:
        raise InvalidLabel("Tick a user message as malicious or benign first.")
    example = store.get_example(example_id)
    users = {m.index for m in pg.judged_messages(example.messages)}
    if (bad | good) - users:
        raise InvalidLabel(f"Message {min((bad | good) - users) + 1} is not a user message of "
                           f"example #{example_id}; tick only the user messages listed.")
    given = {}
    for x in sorted(pg.labels_of(store, example_id), key=lambda x: x.reviewer != reviewer):
        given.setdefault(x.message_index, x)
    inputs = [pg.PromptGuardInput(
        i, i in bad, given[i].model if i in given else None,
        given[i].preprocessing if i in given else "none",
        given[i].score if i in given else None) for i in sorted(bad | good)]
    done = pg.record(store, example_id, reviewer, inputs)
    changed = sum(action != "unchanged" for _, action in done)
    return (f"Saved {reviewer}'s Prompt Guard labels of example #{example_id}: "
            f"{len(bad)} malicious, {len(good)} benign ({changed} new or changed).")


def resolve_prompt_guard(store: Store, reader: Reader, example_id: Any, message: Any,
                         label: Any, reason: str | None) -> str:
    """A lead's final Prompt Guard label of a message (`message` numbered from 1)."""
    check_lead(reader, "resolve disagreements")
    number = pg.index_of(message)
    if number < 1:
        raise InvalidLabel("Messages are numbered from 1: enter the message's number.")
    if label not in pg.VALUES:
        raise InvalidLabel(f"Pick the final Prompt Guard label: {pg.VALUE_HELP}.")
    decided = pg.resolve(store, parse_id(example_id), number - 1, reader.name, label,
                         reason or "")
    return (f"Example #{decided.example_id} message {number}: final "
            f"{'malicious' if decided.malicious else 'benign'} by {decided.decided_by}.")


PROMPT_GUARD_DISAGREEMENT_HEADERS = ["example", "message", "queue", "labels"]


def prompt_guard_disagreement_rows(store: Store) -> list[list[Any]]:
    """The open Prompt Guard disagreements, for a lead."""
    return [[d.example_id, d.message_index + 1, d.queue or "",
             "; ".join(f"{x['reviewer']}: {x['label']}" for x in d.labels)]
            for d in pg.disagreements(store)]
