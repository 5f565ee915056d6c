"""HTML for the results panel, the status banner and the category legend.

Pure functions of the JSON that `guard.engines.service.moderate` returns. Every string that can come
from a person (category names, raw model output) is escaped before it reaches the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.core.categories import Family, categories_for, custom_codes
from guard.core.prompts import neutralising_markers
from guard.engines.prompt_guard import FIREWALL_THRESHOLD
from guard_app.result_html import bar, e
from guard_app.run import model_name

PROMPT_GUARD_CUTOFF = 0.5  # the classifier's own decision: malicious is the likelier class
SPECIAL_TOKEN_NOTE = (
    "A message contains the text of a special token (such as &lt;|eot|&gt;). Guard Lab gave "
    "it to the model as plain text, so it could not end the guard's prompt or write its "
    "answer; a recipe that tokenizes the prompt string would have read it as the token.")
PROMPT_MARKER_NOTE = (
    "A message contains text that imitates the guard's prompt: a block marker such as "
    "&lt;END CONVERSATION&gt;, the prompt's instructions, or a line that starts like "
    "“User:”, “Agent:” or “S1:”. ")
PROMPT_MARKER_KEPT = (
    "The model may have read it as the prompt's own structure (another turn, another last "
    "message), so this verdict may not be about the message you meant: open “The prompt "
    "Llama Guard saw” to check. "
    "The server can neutralise such text (GUARD_LAB_NEUTRALISE_MARKERS=1).")
PROMPT_MARKER_NEUTRALISED = (
    "This server neutralises it (GUARD_LAB_NEUTRALISE_MARKERS): the model read such markers "
    "in round brackets and such lines quoted with “&gt; ”, a change from the official template.")
PREPROCESSING_NOTE = {
    "none": "each message as written (the model card's recipe)",
    "llamafirewall": "each message as LlamaFirewall reads it: spacing tricks such as "
                     "“I g n o r e” collapsed first",
}


def what_they_judge(family: Family | str = Family.LLAMA_GUARD_4) -> str:
    """Markdown: what Llama Guard and Prompt Guard each answer, and why they can disagree."""
    return (
        f"**{Family(family).label}** judges *harmful content*: does the last message break the "
        "safety policy (the categories you keep ticked)? **Prompt Guard 2** judges *attack "
        "patterns*: does a user message try to jailbreak the assistant or inject instructions? "
        "They answer different questions, so a toxic but plain request can be unsafe for Llama "
        "Guard and benign for Prompt Guard, and a polite jailbreak the other way round. That is "
        "not a bug.")


def verdict_words(result: dict[str, Any], unsafe: bool) -> str:
    """'unsafe: S1 Violent Crimes', 'unsafe (no category named)' or 'safe'."""
    if not unsafe:
        return "safe"
    named = ", ".join(f"{c['code']} {c['name']}" for c in result["categories"])
    return f"unsafe: {named}" if named else "unsafe (no category named)"


def excluded_only_sentence(result: dict[str, Any], unsafe: bool) -> str:
    """One plain sentence when the model named only categories the policy leaves out."""
    left_out = result.get("excluded_codes") or []
    if result["categories"] or not left_out:
        return ""
    codes = ", ".join(left_out)
    decision = (result.get("decision") or {}).get("verdict")
    if decision == "safe" or not unsafe:
        return (f"The model answered unsafe, but only for categories this policy leaves out "
                f"({codes}), so the policy decides safe.")
    return (f"The model answered unsafe, but only for categories this policy leaves out "
            f"({codes}); this policy still counts such an answer as unsafe (its harm score is "
            "at or above the threshold).")


def llama_guard_html(result: dict[str, Any], threshold: float,
                     family: Family | str = Family.LLAMA_GUARD_4) -> str:
    p = float(result["p_unsafe"])
    unsafe = p >= threshold
    verdict = "unsafe" if unsafe else "safe"
    role = "user's message" if result.get("judged_role") == "User" else "assistant's answer"
    if result["categories"]:
        cats = "".join(f'<li><b>{e(c["code"])}</b> {e(c["name"])}</li>'
                       for c in result["categories"])
        categories = f'<ul class="gl-cats gl-muted">{cats}</ul>'
    else:
        categories = ""
    plain = excluded_only_sentence(result, unsafe)
    notes = []
    if result.get("model_label") and result["model_label"] != verdict:
        notes.append(f"The model's text said “{e(result['model_label'])}”; at this threshold "
                     f"the score makes it {verdict}.")
    if result.get("excluded_codes"):
        notes.append("It also named categories you excluded: "
                     + e(", ".join(result["excluded_codes"])) + " (not counted).")
    if result.get("unknown_codes"):
        notes.append("It named codes outside the policy: " + e(", ".join(result["unknown_codes"])))
    if result.get("special_token_text"):
        notes.append(f'<span class="gl-special-token-text">{SPECIAL_TOKEN_NOTE}</span>')
    if result.get("prompt_marker_text"):
        what = PROMPT_MARKER_NEUTRALISED if neutralising_markers() else PROMPT_MARKER_KEPT
        notes.append(f'<span class="gl-prompt-marker-text">{PROMPT_MARKER_NOTE}{what}</span>')
    info = result.get("llama_guard") or {}
    notes_html = "".join(f'<p class="gl-note">{n}</p>' for n in notes)
    plain_html = f'<p class="gl-plain" id="gl-excluded-only">{e(plain)}</p>' if plain else ""
    return (
        f'<div class="gl-card gl-card-{verdict}" id="gl-llama-guard">'
        f'<div class="gl-card-title">{e(Family(family).label)} · harmful content</div>'
        f'<div class="gl-verdict gl-verdict-{verdict}" data-verdict="{verdict}">'
        f'{e(verdict_words(result, unsafe))}</div>'
        f'<div class="gl-muted">judging the last message, the {role}</div>{categories}'
        f'{plain_html}'
        f'<div class="gl-row"><span>harm score <b class="gl-harm">{p:.2f}</b> '
        f'<span class="gl-muted">(p_unsafe <b class="gl-p-unsafe">{p:.3f}</b>)</span></span>'
        f'<span class="gl-muted">threshold {threshold:.2f}</span></div>'
        f'{bar(p, threshold, kind=verdict, label="harm score")}'
        f'<details class="gl-more"><summary>Details</summary>{notes_html}'
        f'<div class="gl-meta">{float(result["seconds"]):.2f} s on {e(info.get("device", "?"))}'
        f' · {e(info.get("dtype", ""))} · {int(result.get("prompt_tokens", 0)):,} prompt tokens'
        f' · {e(model_name(info.get("name", "")))}</div></details></div>')


def _window_note(message: dict[str, Any], window: int) -> str:
    if message["windows"] <= 1:
        return f"{message['tokens']:,} tokens"
    body = max(window - 2, 1)  # [CLS] and [SEP] take two places in each window
    start = message["window"] * body + 1
    end = min((message["window"] + 1) * body, message["tokens"])
    return (f"{message['tokens']:,} tokens in {message['windows']} windows; window "
            f"{message['window'] + 1} (tokens {start:,}-{end:,}) scored highest")


def prompt_guard_html(pg: dict[str, Any], turns: Sequence[dict[str, Any]] | None = None,
                      label: str = "") -> str:
    rows = []
    for m in pg["messages"]:
        p = float(m["p_malicious"])
        kind = "unsafe" if p >= PROMPT_GUARD_CUTOFF else "safe"
        word = "looks like an attack" if p >= PROMPT_GUARD_CUTOFF else "looks benign"
        text = ""
        if turns is not None and m["index"] < len(turns):
            snippet = turns[m["index"]]["text"]
            text = snippet if len(snippet) <= 80 else snippet[:77] + "..."
        rows.append(
            f'<tr class="gl-pg-row" data-p="{p:.6f}"><td>{m["index"] + 1}. {e(m["role"])}</td>'
            f'<td class="gl-snippet">{e(text)}</td>'
            f'<td><b class="gl-pg-score">{p:.3f}</b> <span class="gl-tag gl-{kind}">{word}</span>'
            f'{bar(p, FIREWALL_THRESHOLD, kind=kind, label="p_malicious")}'
            f'<div class="gl-muted">{e(_window_note(m, int(pg.get("window", 512))))}</div></td></tr>')
    worst = float(pg.get("max_p_malicious", 0.0))
    preprocessing = str(pg.get("preprocessing", "none"))
    verdict = "malicious" if worst >= PROMPT_GUARD_CUTOFF else "benign"
    kind = "unsafe" if verdict == "malicious" else "safe"
    words = (f"looks like a jailbreak / injection (score {worst:.2f})" if verdict == "malicious"
             else f"looks benign (score {worst:.2f})")
    seconds = sum(float(m["seconds"]) for m in pg["messages"])
    table = ('<table class="gl-pg"><thead><tr><th>Turn</th><th>Text</th><th>score '
             '(p_malicious)</th></tr></thead><tbody>' + "".join(rows) + '</tbody></table>'
             ) if rows else '<p class="gl-muted">No user turns to score.</p>'
    return (
        f'<div class="gl-card gl-card-{kind}" id="gl-prompt-guard"><div class="gl-card-title">'
        f'Prompt Guard 2 · jailbreak and injection patterns {e(label)}</div>'
        f'<div class="gl-verdict gl-verdict-{kind} gl-verdict-pg" data-verdict="{verdict}">'
        f'{e(words)}</div>'
        f'<div class="gl-muted">the highest score over the user turns; 0.5 and above looks like '
        f'an attack</div>{table}'
        f'<details class="gl-more"><summary>Details</summary>'
        f'<div class="gl-muted">Each score is p_malicious, the model\'s probability of an attack '
        f'pattern; the bar marks {FIREWALL_THRESHOLD}, where Meta\'s LlamaFirewall blocks. Long '
        f'messages are scored in windows of {int(pg.get("window", 512))} tokens, and the '
        f'highest window counts.</div>'
        f'<div class="gl-muted gl-pg-preprocessing" data-preprocessing="{e(preprocessing)}">'
        f'Scored {e(PREPROCESSING_NOTE.get(preprocessing, preprocessing))}.</div>'
        f'<div class="gl-meta">{seconds:.2f} s on {e(pg.get("device", "?"))} · '
        f'{e(model_name(pg.get("name", "")))}</div></details></div>')


def results_html(result: dict[str, Any] | None, threshold: float,
                 turns: Sequence[dict[str, Any]] | None = None, *, pg_label: str = "",
                 notes: Sequence[str] = (), family: Family | str = Family.LLAMA_GUARD_4,
                 stale: bool = False) -> str:
    """The whole results panel for one run; the threshold can change after the run.

    `stale`: the conversation or the settings changed after the run, so it is marked out of
    date (guard_app.run.out_of_date)."""
    if not result:
        return ('<div class="gl-empty">Compose a conversation or load an example, then press '
                '<b>Run both guards</b>.</div>')
    parts = []
    if "p_unsafe" in result:
        parts.append(llama_guard_html(result, threshold, family))
    if "prompt_guard" in result:
        parts.append(prompt_guard_html(result["prompt_guard"], turns, pg_label))
    note_html = "".join(f'<p class="gl-note">{e(n)}</p>' for n in notes)
    total = result.get("timings", {}).get("total_s")
    footer = f'<div class="gl-meta">total {float(total):.2f} s</div>' if total is not None else ""
    shown = f'<div class="gl-results">{"".join(parts)}</div>{note_html}{footer}'
    if stale:
        return (f'<div class="gl-stale" id="gl-stale" role="status"><b>Out of date.</b> The '
                'conversation or the settings changed after this run. Press <b>Run both '
                f'guards</b> for a result that matches.</div><div class="gl-out-of-date">'
                f'{shown}</div>')
    return shown


def refused_image_html(message: str) -> str:
    """Beside the composer: the file that was not attached, and what the turn will hold."""
    return (f'<div class="gl-problem" id="gl-refused-image" role="alert">Not attached: '
            f'{e(message)} The turn you are writing holds only what is shown above.</div>')


def kept_note_html(said: str) -> str:
    """What the browser could not keep across a reload ('' when it kept everything)."""
    return f'<div class="gl-problem" id="gl-kept-problem">{e(said)}</div>' if said else ""


def banner_html(tiny: bool, failures: dict[str, str], loaded: dict[str, str],
                family: Family | str = Family.LLAMA_GUARD_4) -> str:
    """What is running: test models, failed loads with the reason and what to do."""
    parts = []
    if tiny:
        parts.append(
            '<div class="gl-banner gl-banner-tiny"><b>Test models.</b> Tiny offline stand-ins '
            f'for {e(Family(family).label)} and Prompt Guard 2 that know a few examples: their '
            'verdicts mean nothing.</div>')
    for name, message in failures.items():
        parts.append(
            f'<div class="gl-banner gl-banner-error"><b>{e(name)} did not load.</b> {e(message)}'
            f' The rest of the page works without it.</div>')
    if loaded:
        parts.append('<div class="gl-loaded">' + " · ".join(
            f"{e(k)}: <code>{e(v)}</code>" for k, v in loaded.items()) + "</div>")
    return "".join(parts)


def category_legend_html(family: Family | str = Family.LLAMA_GUARD_4) -> str:
    rows = "".join(
        f'<tr><td><b>{e(c.code)}</b></td><td>{e(c.card_name)}</td><td>{e(c.description)}</td></tr>'
        for c in categories_for(family))
    return f'<table class="gl-legend">{rows}</table>'


def custom_html(custom: Sequence[dict[str, str]],
                family: Family | str = Family.LLAMA_GUARD_4) -> str:
    """The custom categories, numbered after the family's last code as the prompt numbers them."""
    if not custom:
        last = categories_for(family)[-1].code
        a, b = custom_codes(family, 2)
        return (f'<div class="gl-muted">No custom categories. They are added after '
                f'{e(last)} as {a}, {b}, ... with your description in the prompt.</div>')
    items = "".join(f'<li><b>{code}</b> {e(c["name"])}'
                    f'{": " + e(c["description"]) if c["description"] else ""}</li>'
                    for code, c in zip(custom_codes(family, len(custom)), custom, strict=True))
    return f'<ul class="gl-custom">{items}</ul>'
