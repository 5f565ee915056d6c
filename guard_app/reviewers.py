"""Who may read and write labels: open (anyone types a name), local accounts, or Hugging Face login.

Pure: no gradio. With accounts, a sign-in opens a server-side session and the page keeps only its
opaque token; every handler that reads or writes labels passes that token (and, on Spaces, the
OAuth username) to `ReviewerGate.who`, so the API endpoints refuse exactly as the page does, and
an expired or signed-out token is worth nothing. Failed sign-ins are limited per reviewer name from
one visitor, and per visitor (guard_app.fair.visitor): a name locked by one visitor's guesses
stays open to every other visitor, so no single attacker can lock the reviewers out.
"""

from __future__ import annotations

import hmac
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from labels.errors import LabelsError

ENV = "GUARD_LAB_REVIEWERS"
LEADS_ENV = "GUARD_LAB_LEADS"  # reviewers who also adjudicate: 'carol,dave'
EXPIRED = "Your reviewer session has expired; sign in again."


class NotAReviewer(LabelsError):
    """The action needs a reviewer identity that this visitor does not have."""


class TooManySignIns(NotAReviewer):
    """Too many failed sign-ins for a reviewer name or from an address; wait and retry."""


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


def parse_leads(text: str | None, accounts: Mapping[str, str], *, on_space: bool
                ) -> frozenset[str]:
    """'carol, dave' -> the leads. With accounts (or a Space's list of reviewers) each lead must
    be one of them: a lead signs in as a reviewer does."""
    leads = frozenset(n.strip() for n in (text or "").split(",") if n.strip())
    unknown = sorted(leads - set(accounts)) if accounts else []
    if unknown:
        where = "Hugging Face users in" if on_space else "accounts in"
        raise ValueError(f"{LEADS_ENV}: {', '.join(unknown)} must be among the reviewer "
                         f"{where} {ENV}; add them there too.")
    return leads


def duration(seconds: float) -> str:
    """12 -> '12 seconds', 900 -> '15 minutes', 28800 -> '8 hours' (rounded up)."""
    seconds = max(1, math.ceil(seconds))
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and (seconds % size == 0 or seconds >= 2 * size):
            n = math.ceil(seconds / size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


# (field, environment variable, converter): every limit can be set from the environment.
LIMIT_ENV = (("session_ttl", "GUARD_LAB_SESSION_TTL", float),
             ("export_ttl", "GUARD_LAB_EXPORT_TTL", float),
             ("account_failures", "GUARD_LAB_SIGN_IN_FAILURES", int),
             ("address_failures", "GUARD_LAB_SIGN_IN_FAILURES_PER_ADDRESS", int),
             ("failure_window", "GUARD_LAB_SIGN_IN_WINDOW", float))


@dataclass(frozen=True)
class Limits:
    """How long a sign-in and an export link last, and how many failed sign-ins are allowed."""

    session_ttl: float = 8 * 3600  # seconds a reviewer stays signed in
    export_ttl: float = 300  # seconds an export's download link works (once)
    account_failures: int = 5  # failed sign-ins per reviewer name within failure_window
    address_failures: int = 20  # failed sign-ins per client address within failure_window
    failure_window: float = 15 * 60

    def __post_init__(self) -> None:
        for name, env, _ in LIMIT_ENV:
            if not getattr(self, name) > 0:
                raise ValueError(f"{env} must be a positive number, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Limits:
        values = {}
        for name, env, convert in LIMIT_ENV:
            text = (environ.get(env) or "").strip()
            if text:
                try:
                    values[name] = convert(text)
                except ValueError:
                    raise ValueError(f"{env} must be a number, got {text!r}") from None
        return cls(**values)


class Sessions:
    """Signed-in reviewers by random token, each until its expiry or until it signs out."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._by_token: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def open(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self.clock()
            # Forget the expired ones here, so the table stays as small as the signed-in crowd.
            for old in [t for t, (_, until) in self._by_token.items() if until <= now]:
                del self._by_token[old]
            self._by_token[token] = (name, now + self.ttl)
        return token

    def name(self, token: str | None) -> str | None:
        """The reviewer signed in with `token`; None when unknown, signed out or expired."""
        if not isinstance(token, str):
            return None
        with self._lock:
            entry = self._by_token.get(token)
            if entry is None:
                return None
            if entry[1] <= self.clock():
                del self._by_token[token]
                return None
            return entry[0]

    def close(self, token: str | None) -> None:
        if isinstance(token, str):
            with self._lock:
                self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)


class FailureLimit:
    """At most `limit` failures per key within a sliding `window` of seconds."""

    MAX_KEYS = 10_000  # beyond this the oldest keys are forgotten (memory stays bounded)

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again; 0 while under the limit."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) < self.limit:
                return 0.0
            return times[-self.limit] + self.window - now

    def fail(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            times.append(now)
            self._failures.pop(key, None)
            self._failures[key] = times  # most recently failed last
            while len(self._failures) > self.MAX_KEYS:
                del self._failures[next(iter(self._failures))]

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def _pair(name: str, address: str) -> str:
    """The key of one visitor's failures for one name."""
    return f"{address}\0{name}"


@dataclass(frozen=True)
class ReviewerGate:
    mode: Mode = Mode.OPEN
    accounts: Mapping[str, str] = field(default_factory=dict, repr=False)
    limits: Limits = field(default_factory=Limits)
    leads: frozenset[str] = frozenset()  # who resolves disagreements and deletes any label
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    sessions: Sessions = field(init=False, repr=False, compare=False)
    by_account: FailureLimit = field(init=False, repr=False, compare=False)
    by_address: FailureLimit = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits = self.limits
        # Frozen: the session table and the counters are the gate's own mutable parts.
        object.__setattr__(self, "sessions", Sessions(limits.session_ttl, self.clock))
        object.__setattr__(self, "by_account", FailureLimit(limits.account_failures,
                                                            limits.failure_window, self.clock))
        object.__setattr__(self, "by_address", FailureLimit(limits.address_failures,
                                                            limits.failure_window, self.clock))

    @classmethod
    def from_config(cls, accounts: Mapping[str, str] | None, *, on_space: bool,
                    limits: Limits | None = None,
                    environ: Mapping[str, str] | None = None) -> ReviewerGate:
        """`limits` None: the defaults, overridden by GUARD_LAB_SESSION_TTL and the like."""
        accounts = dict(accounts or {})
        environ = os.environ if environ is None else environ
        if limits is None:
            limits = Limits.from_env(environ)
        leads = parse_leads(environ.get(LEADS_ENV), accounts, on_space=on_space)
        if on_space:
            return cls(Mode.SPACE, accounts, limits, leads)
        if any(accounts.values()):
            return cls(Mode.ACCOUNTS, accounts, limits, leads)
        if accounts:
            raise ValueError(f"{ENV}: give each reviewer a password, as in 'alice:secret' "
                             "(names alone only make sense on a Hugging Face Space with hf_oauth: true)")
        return cls(Mode.OPEN, limits=limits, leads=leads)

    def is_lead(self, name: str | None) -> bool:
        """Whether `name` (as `who` returned it) is a lead."""
        return bool(name) and name in self.leads

    @property
    def restricted(self) -> bool:
        """Anonymous visitors can neither read nor write labels."""
        return self.mode is not Mode.OPEN

    def _check_limits(self, name: str, address: str) -> None:
        window = duration(self.limits.failure_window)
        for counter, key, whose in ((self.by_account, _pair(name, address),
                                     "for this reviewer name"),
                                    (self.by_address, address, "from your address")):
            wait = counter.wait(key)
            if wait > 0:
                at = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + wait))
                raise TooManySignIns(
                    f"Too many failed sign-ins {whose}: the limit is {counter.limit} in "
                    f"{window}. Try again in {duration(wait)} (after {at}).")

    def sign_in(self, name: str | None, password: str | None, *,
                address: str | None = None) -> str:
        """A new session token when the password matches; the same refusal for any mismatch.

        Refused without looking at the password once this visitor (`address`, from
        guard_app.fair.visitor) has failed too often, for this name or for any, so guessing
        stops being worth it; other visitors are not refused for it.
        """
        if self.mode is not Mode.ACCOUNTS:
            raise NotAReviewer("This server has no reviewer passwords to sign in with.")
        name = (name or "").strip()
        address = address or "unknown"
        self._check_limits(name, address)
        expected = self.accounts.get(name, "")
        # Compare even for an unknown name, so timing tells nothing about which names exist.
        ok = hmac.compare_digest((password or "").encode(), (expected or "\0").encode())
        if not (ok and name in self.accounts and expected):
            self.by_account.fail(_pair(name, address))
            self.by_address.fail(address)
            raise NotAReviewer("Wrong reviewer name or password.")
        self.by_account.clear(_pair(name, address))
        return self.sessions.open(name)

    def sign_out(self, session: str | None) -> None:
        """End the session server-side: the token no longer works anywhere."""
        self.sessions.close(session)

    def active(self, session: str | None) -> bool:
        """Whether `session` is still a signed-in reviewer (always true without accounts)."""
        return self.mode is not Mode.ACCOUNTS or self.sessions.name(session) is not None

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
            if not session:
                raise NotAReviewer(f"Sign in as a reviewer to {action}: open 'Reviewer? Sign in' "
                                   "at the top of the page.")
            name = self.sessions.name(session)
            if name is None or name not in self.accounts:
                raise NotAReviewer(EXPIRED)
            return name
        name = " ".join((typed or "").split())
        if need_name and not name:
            raise NotAReviewer(f"Type your name in 'Reviewer' at the top of the page to {action}.")
        return name
