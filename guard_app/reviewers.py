"""Who may read and write labels: open (anyone types a name), local accounts, or Hugging Face login.

Pure: no gradio. The page keeps a signed-in name in its session state and passes it, with the
OAuth username on Spaces, to `ReviewerGate.who` in every handler that reads or writes labels, so
the API endpoints refuse exactly as the page does.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from labels.errors import LabelsError

ENV = "GUARD_LAB_REVIEWERS"


class NotAReviewer(LabelsError):
    """The action needs a reviewer identity that this visitor does not have."""


class Mode(Enum):
    OPEN = "open"  # no accounts: everyone is a reviewer and types a name
    ACCOUNTS = "accounts"  # name and password from GUARD_LAB_REVIEWERS
    SPACE = "space"  # Hugging Face login; GUARD_LAB_REVIEWERS names who may review


def parse_accounts(text: str | None) -> dict[str, str]:
    """'alice:secret,bob:secret2' -> {'alice': 'secret', 'bob': 'secret2'}; bare names have ''."""
    accounts: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, secret = item.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"{ENV}: every entry needs a name, as in 'alice:secret', got {item!r}")
        accounts[name] = secret
    return accounts


@dataclass(frozen=True)
class ReviewerGate:
    mode: Mode = Mode.OPEN
    accounts: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, accounts: Mapping[str, str] | None, *, on_space: bool) -> ReviewerGate:
        accounts = dict(accounts or {})
        if on_space:
            return cls(Mode.SPACE, accounts)
        if any(accounts.values()):
            return cls(Mode.ACCOUNTS, accounts)
        if accounts:
            raise ValueError(f"{ENV}: give each reviewer a password, as in 'alice:secret' "
                             "(names alone only make sense on a Hugging Face Space with hf_oauth: true)")
        return cls(Mode.OPEN)

    @property
    def restricted(self) -> bool:
        """Anonymous visitors can neither read nor write labels."""
        return self.mode is not Mode.OPEN

    def sign_in(self, name: str | None, password: str | None) -> str:
        """The reviewer's name when the password matches; the same refusal for any mismatch."""
        if self.mode is not Mode.ACCOUNTS:
            raise NotAReviewer("This server has no reviewer passwords to sign in with.")
        name = (name or "").strip()
        expected = self.accounts.get(name, "")
        # Compare even for an unknown name, so timing tells nothing about which names exist.
        ok = hmac.compare_digest((password or "").encode(), (expected or "\0").encode())
        if not (ok and name in self.accounts and expected):
            raise NotAReviewer("Wrong reviewer name or password.")
        return name

    def who(self, action: str, *, session: str | None = None, typed: str | None = None,
            oauth_username: str | None = None, need_name: bool = False) -> str:
        """The reviewer doing `action`, or NotAReviewer saying how to become one.

        Open mode returns the typed name ('' while reading with no name); `need_name` makes it
        required, for writes that are recorded under a name.
        """
        if self.mode is Mode.SPACE:
            if not oauth_username:
                raise NotAReviewer(f"Sign in as a reviewer to {action}: use 'Sign in with "
                                   "Hugging Face' at the top of the page.")
            if self.accounts and oauth_username not in self.accounts:
                raise NotAReviewer(f"Sign in as a reviewer to {action}: {oauth_username} is not "
                                   f"one of this Space's reviewers ({ENV}).")
            return oauth_username
        if self.mode is Mode.ACCOUNTS:
            if not session or session not in self.accounts:
                raise NotAReviewer(f"Sign in as a reviewer to {action}: open 'Reviewer sign-in' "
                                   "at the top of the page.")
            return session
        name = " ".join((typed or "").split())
        if need_name and not name:
            raise NotAReviewer(f"Type your name in 'Reviewer' at the top of the page to {action}.")
        return name
