"""A reviewer session that survives the page: the browser keeps the sign-in token.

With accounts, the token of a sign-in is kept in the browser's localStorage (Gradio's
BrowserState: encrypted with a secret of this server process), and a reload signs the page in
again while the token is alive on the server; signing out or expiry ends it everywhere. The
sign-in panel folds once signed in. Without accounts, the typed reviewer name is kept the same
way. Only private listeners touch it, so no API endpoint changes.
"""

from __future__ import annotations

import html

import gradio as gr

from guard_app.reviewers import Mode
from guard_app.signin import ReviewerBar

PRIVATE = {"api_visibility": "private", "show_progress": "hidden", "queue": False}
STORAGE_KEY = "guard_lab_reviewer"
SIGN_IN, SIGNED_IN = "Reviewer? Sign in", "Signed in as "


def wire(demo: gr.Blocks, bar: ReviewerBar) -> None:
    kept = gr.BrowserState(None, storage_key=STORAGE_KEY)
    gate = bar.gate
    if gate.mode is Mode.ACCOUNTS:
        def keep(session):
            alive = gate.sessions.name(session) if session else None
            return {kept: session if alive else None, bar.panel: _panel(alive)}

        def restore(token, session):
            unchanged = dict.fromkeys([bar.session, kept, bar.panel, bar.status], gr.skip())
            if session or not token:
                return unchanged
            name = gate.sessions.name(token)
            if name is None:  # expired or signed out meanwhile: forget it
                return {**unchanged, kept: None}
            return {bar.session: token, kept: gr.skip(), bar.panel: _panel(name),
                    bar.status: f"Signed in as <b>{html.escape(name)}</b> (kept by this "
                                "browser until it expires or you sign out)."}

        bar.session.change(keep, [bar.session], [kept, bar.panel], **PRIVATE)
        demo.load(restore, [kept, bar.session], [bar.session, kept, bar.panel, bar.status],
                  **PRIVATE)
    elif gate.mode is Mode.OPEN:
        def keep_name(name):
            return " ".join((name or "").split()) or None

        def restore_name(name):
            return name or gr.skip()

        bar.name.blur(keep_name, [bar.name], [kept], **PRIVATE)
        bar.name.submit(keep_name, [bar.name], [kept], **PRIVATE)
        demo.load(restore_name, [kept], [bar.name], **PRIVATE)


def _panel(name: str | None) -> gr.Accordion:
    """Folded under the reviewer's name once signed in; open to sign in otherwise."""
    if name is None:
        return gr.Accordion(label=SIGN_IN, open=True)
    return gr.Accordion(label=f"{SIGNED_IN}{name} (sign out inside)", open=False)
