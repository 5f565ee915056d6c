"""A fair share of the model: a per-visitor limit on queued and running model calls.

Gradio's queue has a total `max_size` but no per-visitor limit, so one caller could fill it. We
wrap the queue's `push` (where Gradio admits an event into the queue): an event of a model group
from a visitor who already has `per_visitor` such events waiting or running is refused at once
with a message that says why and what to do, before it takes a place in the queue; a full
queue says so in the same way. Both answer HTTP 400 with the message as `detail`, which the page
shows in its error toast (Gradio's page shows its own text for a 503).

Who a visitor is, for every limit of the app (this share, the sign-in limits, the upload quota,
live sessions): `visitor()`, and nothing else. It is the client address; behind trusted proxies
(Hugging Face Spaces), the address the outermost trusted proxy appended to X-Forwarded-For,
counted from the right (`hops`, GUARD_LAB_PROXY_HOPS): the entries left of it are whatever the
client wrote, and are never read.

Model calls that do not go through the queue (the OpenAI-compatible route, guard_app.api.moderations)
take their place through `Share.hold`; both kinds count against the same per-visitor limit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import gradio as gr

log = logging.getLogger("guard_lab")

def visitor(request: Any, *, trust_proxy: bool | int = False) -> str:
    """Who is calling: the client address, or behind `trust_proxy` trusted proxies (True: one)
    the address the outermost of them appended to X-Forwarded-For.

    Each proxy appends the address it received the request from, so with N trusted proxies the
    visitor is the N-th entry from the right; anything left of it came from the client. A
    header with fewer entries than N (a proxy that does not append) gives its leftmost one.
    """
    hops = int(trust_proxy)
    headers = getattr(request, "headers", None) or {}
    if hops > 0:
        # Several X-Forwarded-For headers count as one list, in order (RFC 7230, 3.2.2).
        values = headers.getlist("x-forwarded-for") if hasattr(headers, "getlist") else [
            headers.get("x-forwarded-for", "")]
        entries = [e.strip() for v in values for e in (v or "").split(",") if e.strip()]
        if entries:
            return entries[-min(hops, len(entries))]
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class Busy(Exception):
    """The visitor already has as many model runs waiting or running as one visitor may."""


class Share:
    """Each visitor's model calls, queued (Gradio's queue) or not (`hold`), against one limit."""

    def __init__(self, demo: gr.Blocks, *, groups: Iterable[str], per_visitor: int,
                 trust_proxy: bool | int) -> None:
        self.demo = demo
        self.sessions: Sessions | None = None  # install() sets the live-session limit
        self.groups = set(groups)
        self.per_visitor = per_visitor
        self.trust_proxy = trust_proxy
        self._outside: Counter[str] = Counter()
        self._lock = threading.Lock()

    def who(self, request: Any) -> str:
        return visitor(request, trust_proxy=self.trust_proxy)

    def count(self, who: str) -> int:
        queue = self.demo._queue
        queued = sum(1 for event in list(queue.event_ids_to_events.values())
                     if event.fn.concurrency_id in self.groups and not event.closed
                     and self.who(event.request) == who)
        return queued + self._outside[who]

    def refusal(self, mine: int) -> str:
        return (f"You already have {mine} model run{'s' if mine != 1 else ''} waiting or "
                f"running (at most {self.per_visitor} per visitor, GUARD_LAB_PER_VISITOR). "
                "Wait for them to finish, then try again.")

    @contextlib.contextmanager
    def hold(self, request: Any) -> Iterator[None]:
        """A place for one model call outside the queue, or Busy."""
        who = self.who(request)
        with self._lock:
            mine = self.count(who)
            if mine >= self.per_visitor:
                raise Busy(self.refusal(mine))
            self._outside[who] += 1
        try:
            yield
        finally:
            with self._lock:
                self._outside[who] -= 1
                if self._outside[who] <= 0:
                    del self._outside[who]


class Sessions:
    """At most `per_visitor` live sessions (page tabs, API clients) per visitor: a visitor's new
    session beyond that ends their oldest one, whose state the server then drops.

    Each session holds its state in the server's memory until it expires, so one visitor's
    thousand tabs (or a thousand calls of the REST API, a session each) would hold a thousand
    copies; ending the oldest rather than refusing the newest keeps a client that never closes
    its sessions working. A session is live from its first event until `ttl` seconds after its
    last one (GUARD_LAB_STATE_TTL).
    """

    def __init__(self, per_visitor: int, ttl: float) -> None:
        self.per_visitor, self.ttl = per_visitor, ttl
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def admit(self, session: str, who: str) -> list[str]:
        """Note `session`'s activity; the visitor's sessions to end to stay within the limit."""
        now = time.monotonic()
        with self._lock:
            while self._seen:
                oldest, (_, last) = next(iter(self._seen.items()))
                if now - last < self.ttl:
                    break
                del self._seen[oldest]
            ended: list[str] = []
            if session not in self._seen:
                mine = [s for s, (w, _) in self._seen.items() if w == who]  # oldest first
                ended = mine[:max(0, len(mine) - self.per_visitor + 1)]
                for s in ended:
                    del self._seen[s]
            self._seen[session] = (who, now)
            self._seen.move_to_end(session)
        return ended

    def live(self, who: str) -> int:
        with self._lock:
            return sum(1 for w, _ in self._seen.values() if w == who)


def install(demo: gr.Blocks, *, groups: Iterable[str], per_visitor: int,
            trust_proxy: bool | int, sessions_per_visitor: int | None = None,
            session_ttl: float = 7200) -> Share:
    """Refuse a visitor's model call beyond `per_visitor` waiting or running at once; a
    visitor's session beyond `sessions_per_visitor` live ones ends their oldest (None: no
    limit)."""
    from gradio import route_utils

    queue = demo._queue
    share = Share(demo, groups=groups, per_visitor=per_visitor, trust_proxy=trust_proxy)
    original = queue.push

    sessions = Sessions(sessions_per_visitor, session_ttl) if sessions_per_visitor else None
    share.sessions = sessions

    def end(ended: list[str]) -> None:
        holder = getattr(getattr(queue, "server_app", None), "state_holder", None)
        if holder is None:
            return
        for session in ended:
            holder.delete_state(session)  # runs the states' delete callbacks (sign-outs)
            with holder.lock:
                holder.session_data.pop(session, None)
                holder.time_last_used.pop(session, None)
        log.info("ended %d session%s of a visitor over GUARD_LAB_SESSIONS_PER_VISITOR",
                 len(ended), "s" if len(ended) != 1 else "")

    async def push(body: Any, request: Any, username: str | None):
        if sessions is not None and body.session_hash:
            ended = sessions.admit(body.session_hash, share.who(request))
            if ended:
                end(ended)
        if body.fn_index is not None:
            fn = route_utils.get_fn(demo, None, body)
            if fn.concurrency_id in share.groups:
                mine = share.count(share.who(request))
                if mine >= per_visitor:
                    return False, share.refusal(mine), "error"
        ok, detail, state = await original(body=body, request=request, username=username)
        if state == "queue_full":  # Gradio's page would say only "currently busy" for a 503
            return (False, f"The demo is busy: {queue.max_size} runs are already waiting, the "
                    "most it queues (GUARD_LAB_QUEUE_SIZE). Try again in a minute.", "error")
        return ok, detail, state

    queue.push = push
    return share
