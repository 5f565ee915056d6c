"""The Review panel and the Labeled examples tab over `labels.Store`: pure functions, no gradio."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from guard.core.prompts import CustomCategory
from guard_app.conversation import stored_turns, to_conversation
from guard_app.result_html import stored_answer_html  # noqa: F401 (named here as before)

if TYPE_CHECKING:
    from guard_app.run import PageRun
from labels import ExampleFilter, ExampleInput, LabelInput, ModelOutput, SavedExample, Store, queues
from labels import prompt_guard as pg
from labels.errors import InvalidLabel
from labels.prompt_guard import PromptGuardInput

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


def prompt_guard_choices(run: PageRun | None) -> list[tuple[str, int]]:
    """The user messages a Prompt Guard label may be about, as (what the page shows, message
    index): "Message 1: Ignore all… (p_malicious 0.970)"."""
    if run is None:
        return []
    scores = {m["index"]: float(m["p_malicious"])
              for m in (run.result.get("prompt_guard") or {}).get("messages", [])}
    out = []
    for index, turn in enumerate(run.turns):
        text = str(turn.get("text") or "").strip()
        if turn.get("role") != "user" or not text:
            continue
        snippet = " ".join(text.split())
        snippet = snippet if len(snippet) <= 60 else snippet[:59] + "…"
        score = f" (p_malicious {scores[index]:.3f})" if index in scores else ""
        out.append((f"Message {index + 1}: {snippet}{score}", index))
    return out


def prompt_guard_marks(malicious: Sequence[Any] | None, benign: Sequence[Any] | None
                       ) -> dict[int, bool]:
    """The page's two boxes of user messages (ticked malicious, ticked benign) as {message
    index: malicious}; a message ticked in both is refused, one in neither is left unlabelled."""
    bad = {pg.index_of(i) for i in malicious or ()}
    good = {pg.index_of(i) for i in benign or ()}
    if bad & good:
        raise InvalidLabel(f"Message {min(bad & good) + 1} is ticked both malicious and benign "
                           "for Prompt Guard; untick one.")
    return {**dict.fromkeys(good, False), **dict.fromkeys(bad, True)}


def prompt_guard_inputs(result: dict[str, Any], messages: Sequence[int],
                        marks: dict[int, bool]) -> list[PromptGuardInput]:
    """The reviewer's Prompt Guard labels ({message index: malicious}; `messages`: the user
    messages' indexes), given against the run's Prompt Guard answer."""
    unknown = sorted(set(marks) - set(messages))
    if unknown:
        raise InvalidLabel(f"Message {unknown[0] + 1} is not a user message of this "
                           "conversation; label only the user messages listed.")
    found = result.get("prompt_guard") or {}
    scores = {int(m["index"]): float(m["p_malicious"]) for m in found.get("messages", [])}
    return [PromptGuardInput(i, marks[i], found.get("name", ""),
                             found.get("preprocessing") or "none", scores.get(i))
            for i in sorted(marks)]


def save_review(store: Store, run: PageRun | None, threshold: float, *, reviewer: str,
                model_right: str | None, label: str | None, categories: Sequence[str],
                note: str, max_images: int, none_fits: bool = False,
                prompt_guard: dict[int, bool] | None = None) -> SavedExample:
    """Store the judged conversation with the reviewer's label, in one transaction.

    `prompt_guard`: the reviewer's Prompt Guard labels, {user message index: malicious (a
    jailbreak or prompt injection) or not}; messages left out get none."""
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
    pg_labels = prompt_guard_inputs(result, [i for _, i in prompt_guard_choices(run)],
                                    dict(prompt_guard or {}))
    return store.save_example(example, LabelInput(reviewer or "", label,
                                                  tuple(categories or ()), note or "",
                                                  bool(none_fits)), pg_labels)


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

def queue_choices(store: Store) -> list[str]:
    return [q.name for q in queues.list_queues(store)]


def queue_item_html(item: dict[str, Any]) -> str:
    """The conversation of a queue item, compact, for labelling beside the stored answer."""
    e = html.escape
    rows = "".join(f'<div class="gl-qturn"><b>{e(m["role"])}</b> {e(str(t["text"]))}</div>'
                   for m, t in zip(item["messages"], stored_turns(item["messages"]), strict=True))
    return f'<div class="gl-queue-item" id="gl-queue-item">{rows}</div>'


# ---- Prompt Guard labels of a queue item ----

def item_prompt_guard_choices(item: dict[str, Any]) -> list[tuple[str, int]]:
    """A queue item's user messages as (what the page shows, message index), with Prompt
    Guard's stored score when the item carries one."""
    scores = {int(k): float(v) for k, v in ((item.get("prompt_guard") or {}).get("scores")
                                            or {}).items()}
    turns = stored_turns(item["messages"])
    out = []
    for index in item.get("user_messages") or ():
        snippet = " ".join(str(turns[index]["text"]).split())
        snippet = snippet if len(snippet) <= 60 else snippet[:59] + "…"
        score = f" (p_malicious {scores[index]:.3f})" if index in scores else ""
        out.append((f"Message {index + 1}: {snippet}{score}", index))
    return out


def item_prompt_guard_html(item: dict[str, Any]) -> str:
    """Prompt Guard's stored answer of a queue item, and what the queue asks of Prompt Guard."""
    found = item.get("prompt_guard") or {}
    e = html.escape
    parts = []
    if found.get("scores"):
        threshold = float(found.get("threshold", 0.9))
        said = ", ".join(
            f"message {int(i) + 1}: {float(p):.3f} "
            f"({'malicious' if float(p) >= threshold else 'benign'})"
            for i, p in sorted(found["scores"].items(), key=lambda kv: int(kv[0])))
        parts.append(f"<b>Prompt Guard said</b> {e(said)} at threshold {threshold:.2f} · "
                     f'<span class="gl-muted">{e(found.get("model") or "")}</span>')
    if item.get("prompt_guard_required"):
        parts.append("This queue is about Prompt Guard: label each user message benign or "
                     "malicious.")
    if not parts:
        return ""
    return f'<div class="gl-stored" id="gl-stored-prompt-guard">{" ".join(parts)}</div>'
