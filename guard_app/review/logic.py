"""The Review panel and the Labeled examples tab over `labels.Store`: pure functions, no gradio."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from guard.core.categories import choices
from guard.core.prompts import CustomCategory
from guard_app.moderate.editor import to_conversation

if TYPE_CHECKING:
    from guard_app.moderate.logic import PageRun
from labels import ExampleFilter, ExampleInput, LabelInput, ModelOutput, SavedExample, Store, queues
from labels.errors import InvalidLabel

LIST_HEADERS = ["id", "created", "preview", "images", "model", "p_unsafe", "model categories",
                "gold labels", "reviewers", "disagreement"]


def model_output(result: dict[str, Any], threshold: float) -> ModelOutput:
    """What the model said, at the threshold shown on the page when the reviewer saved."""
    pg = result.get("prompt_guard") or {}
    info = result.get("llama_guard") or {}
    unsafe = float(result["p_unsafe"]) >= threshold
    # Under a policy, at its own threshold, the verdict is the policy's decision, recorded by name.
    decided = result.get("policy") and float(result["threshold"]) == float(threshold)
    if decided:
        unsafe = bool(result["decision"]["flagged"])
    return ModelOutput(
        model=result["model"], raw_output=result["raw_output"], unsafe=unsafe,
        p_unsafe=float(result["p_unsafe"]), threshold=threshold,
        categories=tuple(c["code"] for c in result["categories"]) if unsafe else (),
        model_label=result.get("model_label", ""), revision=info.get("revision") or "",
        prompt_guard_model=pg.get("name", ""), prompt_guard_revision=pg.get("revision") or "",
        prompt_guard_scores={str(m["index"]): float(m["p_malicious"])
                             for m in pg.get("messages", [])},
        policy=result["policy"] if decided else "")


def default_label(result: dict[str, Any], threshold: float, model_right: bool
                  ) -> tuple[str, list[str]]:
    """The label and categories to prefill when the reviewer says the model was right or wrong."""
    unsafe = float(result["p_unsafe"]) >= threshold
    if model_right:
        return ("unsafe", [c["code"] for c in result["categories"]]) if unsafe else ("safe", [])
    return ("safe", []) if unsafe else ("unsafe", [])


def save_review(store: Store, run: PageRun | None, threshold: float, *, reviewer: str,
                model_right: str | None, label: str | None, categories: Sequence[str],
                note: str, max_images: int, none_fits: bool = False) -> SavedExample:
    """Store the judged conversation with the reviewer's label, in one transaction."""
    result = run.result if run is not None else {}
    if "p_unsafe" not in result:
        raise InvalidLabel("There is no Llama Guard verdict to review. Run the guards first.")
    if label not in ("safe", "unsafe"):
        raise InvalidLabel("Pick the correct label: safe or unsafe.")
    model_unsafe = float(result["p_unsafe"]) >= threshold
    # "Wrong" with the model's own unsafe verdict is fine when the categories differ from its.
    wrong_categories = (model_right == "wrong" and label == "unsafe" and model_unsafe
                        and set(categories or ()) != {c["code"] for c in result["categories"]})
    if model_right in ("right", "wrong") and not wrong_categories and (model_right == "right") != (
            (label == "unsafe") == model_unsafe):
        said = "unsafe" if model_unsafe else "safe"
        raise InvalidLabel(
            f"You marked the model {model_right} but it said {said} and your label is {label}. "
            "Change one of them.")
    example = ExampleInput(
        conversation=to_conversation(run.turns, max_images), family=result["family"],
        output=model_output(result, threshold), excluded=tuple(run.excluded),
        custom=tuple(CustomCategory(c["name"], c["description"]) for c in run.custom),
        prompt=run.prompt)
    return store.save_example(example, LabelInput(reviewer or "", label,
                                                  tuple(categories or ()), note or "",
                                                  bool(none_fits)))


def list_rows(store: Store, *, label: str = "any", category: str = "", disagreement: bool = False,
              text: str = "", limit: int = 200) -> list[list[Any]]:
    filters = ExampleFilter(label=None if label in ("", "any", None) else label,
                            category=category or None, disagreement=True if disagreement else None,
                            text=text.strip() or None, limit=limit)
    return [[s.id, s.created_at[:19].replace("T", " "), s.preview, s.image_count,
             "unsafe" if s.model_unsafe else "safe", round(s.p_unsafe, 3),
             ", ".join(s.model_categories), ", ".join(s.gold_labels), ", ".join(s.reviewers),
             "yes" if s.disagreement else ""] for s in store.list_examples(filters)]


# ---- review queues (labels.queues) as the page shows them ----

def stored_turns(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored item's chat-format messages as the page's turns (text only: runs and imports
    hold no pictures)."""
    turns = []
    for message in messages:
        content = message.get("content", "")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        turns.append({"role": message["role"], "text": str(content), "images": []})
    return turns


def stored_answer_html(item: dict[str, Any]) -> str:
    """The model's stored answer of a queue item or a run row: verdict, p_unsafe, categories."""
    e = html.escape
    if item.get("error"):
        return (f'<div class="gl-stored gl-stored-failed"><b>The model failed on this row:</b> '
                f'{e(str(item["error"]))}</div>')
    if item.get("verdict") is None:
        return ('<div class="gl-stored" id="gl-stored-answer"><b>Not judged</b>: no model answer '
                'is stored (imported); run the guards to see one. Model metrics leave it '
                'out.</div>')
    names = dict((code, label) for label, code in choices(item.get("family") or "llama-guard-4"))
    cats = ", ".join(names.get(c, c) for c in item.get("categories") or []) or "none"
    p = item.get("p_unsafe")
    score = ("" if p is None else
             f" (p_unsafe {float(p):.3f} at threshold {float(item.get('threshold', 0.5)):.2f})")
    return (f'<div class="gl-stored gl-stored-{e(item["verdict"])}" id="gl-stored-answer">'
            f'<b>Model said {e(item["verdict"])}</b>{score} · categories: {e(cats)} · '
            f'<span class="gl-muted">{e(item.get("model") or "")}</span></div>')


def queue_choices(store: Store) -> list[str]:
    return [q.name for q in queues.list_queues(store)]


def queue_item_html(item: dict[str, Any]) -> str:
    """The conversation of a queue item, compact, for labelling beside the stored answer."""
    e = html.escape
    rows = "".join(f'<div class="gl-qturn"><b>{e(m["role"])}</b> {e(str(t["text"]))}</div>'
                   for m, t in zip(item["messages"], stored_turns(item["messages"]), strict=True))
    return f'<div class="gl-queue-item" id="gl-queue-item">{rows}</div>'
