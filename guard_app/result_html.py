"""HTML pieces every screen that shows a model's answer shares: a 0-1 bar, a stored answer.

Gradio-free. Every string that can come from a person or a file is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from guard.core.categories import choices
from guard_app.run import model_name


def e(value: Any) -> str:
    return html.escape(str(value))


def bar(value: float, threshold: float | None, *, kind: str, label: str) -> str:
    """A 0-1 bar with an optional threshold mark."""
    pct = max(0.0, min(1.0, value)) * 100
    mark = ""
    if threshold is not None:
        mark = (f'<div class="gl-bar-mark" style="left:{threshold * 100:.1f}%" '
                f'title="threshold {threshold:.2f}"></div>')
    return (f'<div class="gl-bar" role="img" aria-label="{e(label)} {value:.3f}">'
            f'<div class="gl-bar-fill gl-{kind}" style="width:{pct:.1f}%"></div>{mark}</div>')


def stored_answer_html(item: dict[str, Any]) -> str:
    """The model's stored answer of a queue item or a run row: verdict, p_unsafe, categories."""
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
            f'<span class="gl-muted">{e(model_name(item.get("model") or ""))}</span></div>')
