"""A fair share of the model: a per-visitor limit on queued and running model calls.

Gradio's queue has a total `max_size` but no per-visitor limit, so one caller could fill it. We
wrap the queue's `push` (where Gradio admits an event into the queue): an event of a model group
from a visitor who already has `per_visitor` such events waiting or running is refused at once
with a message that says why and what to do, before it takes a place in the queue; a full
queue says so in the same way. Both answer HTTP 400 with the message as `detail`, which the page
shows in its error toast (Gradio's page shows its own text for a 503). A visitor
is the client address; behind a trusted proxy (Hugging Face Spaces), the first address of
X-Forwarded-For, which the proxy sets.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def install(demo: gr.Blocks, *, groups: Iterable[str], per_visitor: int,
            trust_proxy: bool) -> None:
    """Refuse a visitor's model call beyond `per_visitor` waiting or running at once."""
    from gradio import route_utils

    queue = demo._queue
    groups = set(groups)
    original = queue.push

    async def push(body: Any, request: Any, username: str | None):
        if body.fn_index is not None:
            fn = route_utils.get_fn(demo, None, body)
            if fn.concurrency_id in groups:
                who = visitor(request, trust_proxy=trust_proxy)
                mine = sum(1 for event in list(queue.event_ids_to_events.values())
                           if event.fn.concurrency_id in groups and not event.closed
                           and visitor(event.request, trust_proxy=trust_proxy) == who)
                if mine >= per_visitor:
                    return (False, f"You already have {mine} model run"
                            f"{'s' if mine != 1 else ''} waiting or running (at most "
                            f"{per_visitor} per visitor, GUARD_LAB_PER_VISITOR). Wait for "
                            "them to finish, then try again.", "error")
        ok, detail, state = await original(body=body, request=request, username=username)
        if state == "queue_full":  # Gradio's page would say only "currently busy" for a 503
            return (False, f"The demo is busy: {queue.max_size} runs are already waiting, the "
                    "most it queues (GUARD_LAB_QUEUE_SIZE). Try again in a minute.", "error")
        return ok, detail, state

    queue.push = push
