"""The reviewer bar: who is reviewing (a typed name, an account, or a Hugging Face sign-in)."""

from __future__ import annotations

import functools
import html
from typing import Any

import gradio as gr

from guard_app.guarded import guarded  # escapes its messages: toasts render HTML
from guard_app.reviewers import Mode, NotAReviewer, ReviewerGate, duration
from labels.errors import LabelsError

PRIVATE = {"api_visibility": "private"}


def _username(profile: Any) -> str | None:
    return getattr(profile, "username", None) or None


def _address(request: Any) -> str | None:
    """The visitor as every limit tells them apart (guard_app.fair.visitor; the page sets
    `ReviewerBar.visitor` to the server's proxy setting)."""
    from guard_app.fair import visitor

    return visitor(request) if request is not None else None


SHORTCUTS = ("**Keyboard shortcuts:** Ctrl+Enter save the label form in view · Alt+U / Alt+F "
             "pick unsafe / safe · Alt+1 … Alt+9, Alt+0 toggle S1-S10 (Alt+Shift+1 … S11-) · "
             "Alt+R run both guards · Alt+W / Alt+G the model was wrong / right · Alt+S save "
             "the review · Alt+N / Alt+P the next / previous example · Enter in the message "
             "box adds the turn (Shift+Enter: a new line).")


class ReviewerBar:
    """Who is reviewing: Hugging Face login on Spaces, a password sign-in with accounts, else a name.

    Handlers ask `who(...)` with the session, the typed name and the OAuth profile, so the gate
    holds for API calls too, not only on the page. The session state holds only the gate's
    opaque token, which the browser also keeps (guard_app.kept_session) so that a reload stays
    signed in until the token expires or the reviewer signs out.
    """

    def __init__(self, gate: ReviewerGate):
        self.gate = gate
        self.visitor = _address  # request -> who, for the sign-in limits (page.py sets it)
        # No time_to_live: the gate's table decides expiry, so the reviewer reads "expired"
        # rather than "sign in". No sign-out when Gradio drops the state either: the browser
        # keeps the token across reloads (guard_app.kept_session) until it expires or the
        # reviewer signs out.
        self.session = gr.State(None)
        self.password = None
        self.signing: list = []  # the sign-in and sign-out events (accounts), once wired
        titles = {Mode.OPEN: "Reviewer", Mode.ACCOUNTS: "Reviewer? Sign in",
                  Mode.SPACE: "Reviewer? Sign in"}
        # For visitors a small folded link; open without accounts, where everyone reviews.
        with gr.Accordion(titles[gate.mode], open=gate.mode is Mode.OPEN,
                          elem_id="gl-reviewer",
                          elem_classes=[] if gate.mode is Mode.OPEN else ["gl-signin-link"]
                          ) as self.panel:
            if gate.mode is Mode.SPACE:
                gr.Markdown("Reviewers sign in with their Hugging Face account to label, browse, "
                            "export and measure. Anyone can run the models.")
                gr.LoginButton()
                self.name = gr.Textbox(visible=False)
            elif gate.mode is Mode.ACCOUNTS:
                gr.Markdown("Labelling, browsing, export and measurement are for reviewers. "
                            "Anyone can run the models.")
                with gr.Row():
                    self.name = gr.Textbox(label="Reviewer name", max_lines=1,
                                           elem_id="gl-reviewer-name")
                    self.password = gr.Textbox(label="Password", type="password", max_lines=1,
                                               elem_id="gl-reviewer-password")
                with gr.Row():
                    self.sign_in = gr.Button("Sign in", size="sm", elem_id="gl-sign-in")
                    # Shown once signed in (show_to_reviewers): a visitor has nothing to end.
                    self.sign_out = gr.Button("Sign out", size="sm", visible=False)
            else:
                self.name = gr.Textbox(label="Reviewer", max_lines=1, elem_id="gl-reviewer-name",
                                       placeholder="your name or handle: saved with your labels")
            self.status = gr.HTML("", elem_id="gl-reviewer-status")
        self.inputs = [self.session, self.name]

    def who(self, action: str, session: str | None, typed: str | None, profile: Any,
            need_name: bool = False) -> str:
        return self.gate.who(action, session=session, typed=typed,
                             oauth_username=_username(profile), need_name=need_name)

    def wire(self) -> None:
        if self.gate.mode is not Mode.ACCOUNTS:
            return

        def sign_in(name, password, session, request: gr.Request):
            token = self.gate.sign_in(name, password, address=self.visitor(request))
            self.gate.sign_out(session)  # this page's previous sign-in, if any, ends here
            who = self.gate.who("review", session=token)
            lasts = duration(self.gate.limits.session_ttl)
            return {self.session: token, self.password: "",
                    self.status: f"Signed in as <b>{html.escape(who)}</b> for {lasts}."}

        def sign_out(session):
            self.gate.sign_out(session)
            return {self.session: None, self.status: "Signed out."}

        @functools.wraps(sign_in)
        def sign_in_on_page(name, password, session, request: gr.Request):
            """A refusal said in the status line (and a toast), every field left as it was: a
            raised gr.Error would cover the Password field with an "Error" badge."""
            try:
                return sign_in(name, password, session, request)
            except LabelsError as exc:
                gr.Warning(html.escape(str(exc), quote=False))
                return {self.session: gr.skip(), self.password: gr.skip(),
                        self.status: f'<span class="gl-problem" id="gl-sign-in-refusal" '
                                     f'role="alert">{html.escape(str(exc))}</span>'}

        signing_in = [self.name, self.password, self.session]
        outputs = [self.session, self.password, self.status]
        # The API's /reviewer_sign_in raises its refusal to the client, as before.
        gr.Button(visible=False, render=True).click(guarded(sign_in), signing_in, outputs,
                                                    api_name="reviewer_sign_in")
        self.signing = [
            self.sign_in.click(guarded(sign_in_on_page), signing_in, outputs,
                               api_name="reviewer_sign_in_on_page", **PRIVATE),
            self.password.submit(guarded(sign_in_on_page), signing_in, outputs, **PRIVATE),
            self.sign_out.click(sign_out, [self.session], [self.session, self.status],
                                api_name="reviewer_sign_out")]



    def is_reviewer(self, session: str | None, profile: Any = None) -> bool:
        """Whether this page shows the reviewer's face: always without accounts."""
        if self.gate.mode is Mode.OPEN:
            return True
        try:
            self.gate.who("review", session=session, oauth_username=_username(profile))
        except NotAReviewer:
            return False
        return True

    def show_to_reviewers(self, demo: gr.Blocks, parts: list[Any]) -> None:
        """Show `parts` (the queue, the review form, the reviewers' tabs) once a reviewer
        signs in, hide them when they sign out, without a reload. Built hidden, except in
        open mode (guard_app.page builds them with `visible=self.gate.mode is Mode.OPEN`)."""
        if self.gate.mode is Mode.ACCOUNTS:
            parts = [*parts, self.sign_out]
        if self.gate.mode is Mode.OPEN or not parts:
            return

        def face(session, profile: gr.OAuthProfile | None = None):
            shown = self.is_reviewer(session, profile)
            return [_shown(part, shown) for part in parts]

        quiet = {**PRIVATE, "show_progress": "hidden", "queue": False}  # no model work
        for event in self.signing:  # signing in or out on this page
            event.then(face, [self.session], parts, **quiet)
        # A kept sign-in, restored as the page loads (guard_app.kept_session), says so in the
        # status line: the face follows the session then too.
        gr.on([self.session.change, self.status.change], face, [self.session], parts, **quiet)
        if self.gate.mode is Mode.SPACE:  # a Hugging Face sign-in arrives with the page
            demo.load(face, [self.session], parts, **quiet)


def _shown(part: Any, visible: bool) -> Any:
    """The visibility update for one part (a Tab, a Column, an Accordion)."""
    return type(part)(visible=visible)
