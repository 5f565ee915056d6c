"""The policy picker (the Moderate tab's and Batch evaluation's), "Save as policy" and the
decision beside the model's answer.

Gradio-free. Picking a policy sets the page's categories, custom categories, threshold and
Prompt Guard reading; a run records the picked policy (name@version) only while the page still
says what the policy says, else it follows the page and records none, and says so.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from guard.core.categories import Family, categories_for
from guard.core.policy import Policy, PromptGuardPolicy, ad_hoc
from guard_app import run as logic

PAGE = "(the settings below)"  # the picker's choice for no policy


def choices(book: Any) -> list[str]:
    """The picker's choices: no policy, the saved policies (latest versions), the default."""
    if book is None:
        return [PAGE]
    found = [PAGE, *book.names()]
    if book.default is not None and book.default.label not in found:
        found.append(book.default.label)
    return found


def default_choice(book: Any) -> str:
    return book.default.label if book is not None and book.default is not None else PAGE


def picked(book: Any, choice: str | None) -> Policy | None:
    if book is None or not choice or choice == PAGE:
        return None
    if book.default is not None and choice == book.default.label:
        return book.default
    return book.resolve(choice)


def page_settings(policy: Policy, family: Family) -> dict[str, Any]:
    """What the page's controls show for `policy`: ticked codes, custom list, threshold, the
    Prompt Guard choice (None: leave it) and whether it reads as LlamaFirewall does."""
    return {"ticked": [c.code for c in categories_for(family) if c.code not in policy.excluded],
            "custom": policy.custom_json, "threshold": policy.threshold,
            "prompt_guard": policy.prompt_guard.model
            if policy.prompt_guard.model in ("86m", "22m") else None,
            "firewall": policy.prompt_guard.preprocessing == "llamafirewall"}


def page_policy(chosen: Policy | None, family: Family, ticked: Sequence[str] | None,
                custom: Sequence[dict[str, str]], threshold: float, pg_choice: str | None,
                firewall: bool) -> tuple[Policy, str]:
    """The policy a run on these page settings enforces, and a note when the page has moved
    away from the picked policy (then the page's settings, recorded as no policy)."""
    excluded = logic.excluded_codes(ticked, family)
    customs = logic.custom_categories(custom)
    preprocessing = "llamafirewall" if firewall else "none"
    loose = ad_hoc(excluded, float(threshold), family, customs, preprocessing)
    if chosen is None:
        return loose, ""
    model = pg_choice if pg_choice in ("86m", "22m") else chosen.prompt_guard.model
    same = replace(chosen, excluded=tuple(excluded), custom=tuple(customs),
                   threshold=float(threshold),
                   prompt_guard=replace(chosen.prompt_guard, preprocessing=preprocessing,
                                        model=model))
    if same.content_hash == chosen.content_hash:
        return chosen, ""
    return loose, (f"The page's settings differ from policy {chosen.label}: this run follows "
                   "the page and records no policy. Pick the policy again to enforce it.")


def new_policy(name: str, base: Policy | None, family: Family, ticked: Sequence[str] | None,
               custom: Sequence[dict[str, str]], threshold: float, pg_choice: str | None,
               firewall: bool) -> Policy:
    """The page's settings as a policy named `name` ("Save as policy"), keeping what the page
    has no control for (how excluded-only answers count, Prompt Guard's threshold) from `base`."""
    kept = base.prompt_guard if base is not None else PromptGuardPolicy()
    return Policy.from_json({
        "name": (name or "").strip(), "family": family.value,
        "excluded": list(logic.excluded_codes(ticked, family)), "custom": list(custom),
        "threshold": float(threshold),
        "excluded_only": base.excluded_only if base is not None else "unsafe",
        "prompt_guard": {**kept.to_json(),
                         "model": pg_choice if pg_choice in ("86m", "22m") else kept.model,
                         "preprocessing": "llamafirewall" if firewall else "none"}},
        source="The new policy")


def decision_html(result: dict[str, Any] | None, threshold: float | None = None) -> str:
    """The model's answer and the policy's decision, apart, with the reason when they differ."""
    if not result or result.get("decision") is None or result.get("model_answer") is None:
        return ""
    answer, decision = result["model_answer"], result["decision"]
    named = ", ".join(answer["named"]) or "no category"
    said = (answer["label"] or "nothing readable").upper()
    who = f"policy <b>{html.escape(decision['policy'])}</b>" if decision["policy"] \
        else "the settings on this page (no saved policy)"
    verdict = decision["verdict"].upper()
    lines = [f'<div class="gl-decision" id="gl-decision"><div><b>Model answer:</b> {said} '
             f'({html.escape(named)}), p_unsafe {float(answer["p_unsafe"]):.4g}</div>',
             f'<div><b>Decision</b> of {who}: <b class="gl-{decision["verdict"]}">{verdict}'
             f'</b></div>']
    if decision["reason"]:
        lines.append(f'<div class="gl-reason">Why they differ: '
                     f'{html.escape(decision["reason"])}</div>')
    if threshold is not None and result.get("threshold") is not None and \
            float(threshold) != float(result["threshold"]):
        lines.append(f'<div class="gl-reason">The threshold now on the page ({float(threshold):g}) '
                     f'is not the one this decision used ({float(result["threshold"]):g}); run '
                     "again to decide at it.</div>")
    return "\n".join(lines) + "</div>"
