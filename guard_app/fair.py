"""A fair share of the model: a per-visitor limit on queued and running model calls.

Gradio's queue has a total `max_size` but no per-visitor limit, so one caller could fill it. We
wrap the queue's `push` (where Gradio admits an event into the queue): an event of a model group
from a visitor who already has `per_visitor` such events waiting or running is refused at once
with a message that says why and what to do, before it takes a place in the queue; a full
queue says so in the same way. Both answer HTTP 400 with the message as `detail`, which the page
shows in its error toast (Gradio's page shows its own text for a 503). A visitor
is the client address; behind a trusted proxy (Hugging Face Spaces), the first address of
X-Forwarded-For, which the proxy sets.

Model calls that do not go through the queue (the OpenAI-compatible route, guard_app.api.moderations)
take their place through `Share.hold`; both kinds count against the same per-visitor limit.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import gradio as gr


def visitor(request: Any, *, trust_proxy: bool) -> str:
    """Who is calling: the client address (the proxy's view of it on a Space)."""
    headers = getattr(request, "headers", None) or {}
    if trust_proxy:
        forwarded = headers.get("x-forwarded-for", "")
        if forwarded.strip():
            return forwarded.split(",")[0].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class Busy(Exception):
    """The visitor already has as many model runs waiting or running as one visitor may."""


class Share:
    """Each visitor's model calls, queued (Gradio's queue) or not (`hold`), against one limit."""

    def __init__(self, demo: gr.Blocks, *, groups: Iterable[str], per_visitor: int,
                 trust_proxy: bool) -> None:
        self.demo = demo
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


def install(demo: gr.Blocks, *, groups: Iterable[str], per_visitor: int,
            trust_proxy: bool) -> Share:
    """Refuse a visitor's model call beyond `per_visitor` waiting or running at once."""
    from gradio import route_utils

    queue = demo._queue
    share = Share(demo, groups=groups, per_visitor=per_visitor, trust_proxy=trust_proxy)
    original = queue.push

    async def push(body: Any, request: Any, username: str | None):
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
