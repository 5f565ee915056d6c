"""What the toggles do, for the page and the API: sweeps, per-category scores, attribution.

The functions here call `guard.explore` (through a `run` argument, so app.py can pass the
spaces.GPU-wrapped versions), turn its dataclasses into plain JSON, and draw that JSON as HTML.
The page and the /sweep, /category_scores and /attribution endpoints share the same JSON.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from guard import explore
from guard.core.conversation import Conversation
from guard.core.errors import GuardError
from guard.core.prompts import CustomCategory
from guard.core.verdict import Verdict
from guard_app.result_html import bar

SCORES_MEANING = (
    "Each bar is the probability that the model names this category first, given that it "
    "answers unsafe. It is read from the model's logits by teacher forcing: 'unsafe' is written "
    "in as the first line of its answer and every enabled code is scored as the next one. It is "
    "not a calibrated per-category risk: the categories compete for one first place. "
    "Share rescales them to add up to 100% over the enabled categories; raw is the model's own "
    "probability.")
SCORES_HELP = (
    "For each enabled category: how likely the model is to name it first if it answers unsafe. "
    "The result says what the number means and what the model actually answered.")
SWEEP_HELP = (
    "Runs the conversation with every ticked category, then with each one left out (one batch). "
    "Rows whose verdict differs from the first row are highlighted.")
ATTRIBUTION_HELP = (
    "Judges the conversation cut after each message, then the whole conversation with each "
    "image left out (one batch). Llama Guard judges the last message of what it sees, so each "
    "cut is judged on its own last message.")


def variant_json(variant: explore.Variant) -> dict[str, Any]:
    v = variant.verdict
    return {"name": variant.name, "excluded": list(variant.excluded), "verdict": v.verdict,
            "categories": list(v.category_codes) if v.unsafe else [],
            "p_unsafe": round(v.p_unsafe, 6), "flips": variant.flips}


def _join(items: Sequence[str], word: str = "or") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _other(verdict: str) -> str:
    return "safe" if verdict == "unsafe" else "unsafe"


def sweep_summary(variants: Sequence[dict[str, Any]]) -> str:
    """One line: the reference verdict and which toggles flip it."""
    reference = variants[0]["verdict"]
    flipped = _other(reference)
    without = [v["name"].removeprefix("without ") for v in variants
               if v["flips"] and v["name"].startswith("without ")]
    alone = [v["name"].removeprefix("only ") for v in variants
             if v["flips"] and v["name"].startswith("only ")]
    parts = []
    if without:
        either = " (either one)" if len(without) > 1 else ""
        parts.append(f"Excluding {_join(without)}{either} flips the verdict to {flipped}.")
    if alone:
        parts.append(f"With only {_join(alone)} enabled the verdict is {flipped}.")
    if not parts:
        hint = (" (when several categories fire, it can take leaving out more than one)"
                if reference == "unsafe" else "")
        parts.append(f"No single category toggle flips the verdict: it stays {reference}{hint}.")
    return " ".join(parts)


def attribution_summary(variants: Sequence[dict[str, Any]], roles: Sequence[str]) -> str:
    """Where the conversation turned unsafe, and which image mattered."""
    n = len(roles)
    prefixes, images = variants[:n], variants[n:]
    unsafe = [v["verdict"] == "unsafe" for v in prefixes]
    parts = []
    if unsafe[-1]:
        start = n - 1
        while start > 0 and unsafe[start - 1]:
            start -= 1
        tail = ", and stays unsafe to the end" if start < n - 1 else ""
        parts.append(f"The conversation turns unsafe at message {start + 1} (the {roles[start]}'s "
                     f"message){tail}.")
    elif any(unsafe):
        cuts = [str(i + 1) for i, u in enumerate(unsafe) if u]
        parts.append(f"The whole conversation is safe, but it is unsafe when cut after message "
                     f"{_join(cuts)} (that message, judged as the last one, is unsafe; a later "
                     f"message, such as a refusal, is not).")
    else:
        parts.append("The conversation is safe at every message.")
    flipped = [v["name"].removeprefix("without ") for v in images if v["flips"]]
    if flipped:
        which = "that image mattered" if len(flipped) == 1 else "each of those images mattered"
        parts.append(f"Leaving out {_join(flipped)} flips the verdict to "
                     f"{_other(prefixes[-1]['verdict'])}: {which}.")
    elif images:
        parts.append("Leaving out any one image does not change the verdict.")
    return " ".join(parts)


def sweep_json(guard: Any, conversation: Conversation, excluded: Sequence[str], *,
               threshold: float, only_one: bool = False, custom: Sequence[CustomCategory] = (),
               run: Callable = explore.sweep) -> dict[str, Any]:
    variants = [variant_json(v) for v in run(guard, conversation, excluded, only_one=only_one,
                                             threshold=threshold, custom=custom)]
    return {"threshold": threshold, "reference": variants[0]["verdict"],
            "summary": sweep_summary(variants), "variants": variants}


def attribution_json(guard: Any, conversation: Conversation, excluded: Sequence[str], *,
                     threshold: float, custom: Sequence[CustomCategory] = (),
                     run: Callable = explore.attribution) -> dict[str, Any]:
    variants = [variant_json(v) for v in run(guard, conversation, excluded, threshold=threshold,
                                             custom=custom)]
    roles = [t.role for t in conversation.turns]
    return {"threshold": threshold, "verdict": variants[len(roles) - 1]["verdict"],
            "summary": attribution_summary(variants, roles), "variants": variants}


class NeedsTransformers(GuardError):
    """The action reads the model's logits directly, which only the transformers engine gives."""


def require_logits(guard: Any) -> None:
    """Refuse per-category scores, with the reason, before a GPU call is spent on them."""
    info = guard.describe()
    if not info.capabilities.category_scores:
        engine = info.engine
        raise NeedsTransformers(
            f"Per-category scores read the model's logits for every category code, which only "
            f"the transformers engine gives; this server runs Llama Guard on {engine}. Sweep "
            f"and attribution work on any engine; for scores, start the app with "
            f"--engine transformers.")


def verdict_and_scores(guard: Any, conversation: Conversation, excluded: Sequence[str], *,
                       threshold: float, custom: Sequence[CustomCategory] = ()
                       ) -> tuple[Verdict, list[explore.CategoryScore]]:
    """The verdict and the per-category scores: one GPU call on ZeroGPU, two model passes."""
    require_logits(guard)
    verdict = guard.classify(conversation, excluded, threshold=threshold, custom=custom)
    return verdict, explore.category_scores(guard, conversation, excluded, custom)


def scores_json(guard: Any, conversation: Conversation, excluded: Sequence[str], *,
                threshold: float, custom: Sequence[CustomCategory] = (),
                run: Callable = verdict_and_scores) -> dict[str, Any]:
    verdict, scores = run(guard, conversation, excluded, threshold=threshold, custom=custom)
    if verdict.unsafe:
        named = f", naming {', '.join(verdict.category_codes)}" if verdict.categories else ""
        said = f"The model answered unsafe (p_unsafe {verdict.p_unsafe:.3f}){named}."
    else:
        said = (f"The model answered safe (p_unsafe {verdict.p_unsafe:.3f}, threshold "
                f"{threshold:.2f}). The scores below say which category it would name first "
                "if it had answered unsafe.")
    return {"verdict": verdict.verdict, "p_unsafe": round(verdict.p_unsafe, 6),
            "threshold": threshold, "summary": said, "meaning": SCORES_MEANING,
            "scores": [{"code": s.code, "name": s.name, "probability": s.probability,
                        "share": s.share} for s in scores]}


# HTML


def e(value: Any) -> str:
    return html.escape(str(value))


def variants_html(data: dict[str, Any], *, table_id: str, reference: int = 0) -> str:
    """A table of variants; the row the others are compared with is marked, flips highlighted."""
    rows = []
    for i, v in enumerate(data["variants"]):
        classes = ["gl-variant"] + (["gl-flip"] if v["flips"] else []) + (
            ["gl-reference"] if i == reference else [])
        if v["flips"]:
            flips = f'<b>flips to {e(v["verdict"])}</b>'
        else:
            flips = '<span class="gl-muted">reference</span>' if i == reference else ""
        rows.append(
            f'<tr class="{" ".join(classes)}" data-flips="{str(v["flips"]).lower()}" '
            f'data-name="{e(v["name"])}"><td>{e(v["name"])}</td>'
            f'<td><span class="gl-tag gl-{e(v["verdict"])}">{e(v["verdict"])}</span></td>'
            f'<td>{e(", ".join(v["categories"]))}</td>'
            f'<td class="gl-num">{float(v["p_unsafe"]):.3f}</td><td class="gl-flips">{flips}</td>'
            '</tr>')
    return (f'<p class="gl-explore-summary">{e(data["summary"])}</p>'
            f'<table class="gl-explore" id="{e(table_id)}"><thead><tr><th>Variant</th>'
            '<th>Verdict</th><th>Categories</th><th>p_unsafe</th><th>Flips the verdict</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>'
            f'<div class="gl-meta">threshold {float(data["threshold"]):.2f}</div>')


def sweep_html(data: dict[str, Any]) -> str:
    return variants_html(data, table_id="gl-sweep-table")


def attribution_html(data: dict[str, Any]) -> str:
    turns = sum(v["name"].startswith("up to message") for v in data["variants"])
    return variants_html(data, table_id="gl-attribution-table", reference=turns - 1)


def scores_html(data: dict[str, Any]) -> str:
    rows = []
    for s in data["scores"]:
        rows.append(
            f'<tr class="gl-score" data-code="{e(s["code"])}"><td><b>{e(s["code"])}</b> '
            f'{e(s["name"])}</td>'
            f'<td class="gl-num">{s["share"] * 100:.1f}%'
            f'{bar(s["share"], None, kind="score", label=s["code"] + " share")}</td>'
            f'<td class="gl-num">{s["probability"]:.4f}'
            f'{bar(s["probability"], None, kind="score-raw", label=s["code"] + " raw")}</td></tr>')
    return (f'<p class="gl-explore-summary" data-verdict="{e(data["verdict"])}">'
            f'{e(data["summary"])}</p><p class="gl-note">{e(data["meaning"])}</p>'
            '<table class="gl-explore" id="gl-scores-table"><thead><tr><th>Category</th>'
            '<th>Share</th><th>Raw probability</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def empty_html(action: str) -> str:
    return (f'<div class="gl-empty">Compose a conversation or load an example, then press '
            f'<b>{e(action)}</b>.</div>')
