"""The review queues through the API: /queue_create, /queue_list, /queue_next, /queue_submit,
/queue_skip and /queue_progress, JSON out (labels.queues does the work).

Each takes the reviewer first, as the other labelling endpoints do: a typed name, ignored when
the server has reviewer accounts (then sign in with /reviewer_sign_in in the same session).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from guard_app.guarded import guarded
from guard_app.signin import ReviewerBar
from labels import queues


class QueueApi:
    def __init__(self, store: Any, bar: ReviewerBar) -> None:
        self.store, self.bar = store, bar

    def _who(self, action: str, session: Any, typed: Any, profile: Any) -> str:
        return self.bar.who(action, session, typed, profile, need_name=True)

    def _state(self, queue: str, reviewer: str, item: Any) -> dict[str, Any]:
        return {"item": item.to_json() if item is not None else None,
                "progress": queues.progress(self.store, queue, reviewer).to_json()}

    def create(self, session, typed, name, run, select, other_run, band, overlap, file,
               file_format, profile: gr.OAuthProfile | None = None) -> dict[str, Any]:
        """A queue from a stored run's rows (`run`, `select`) or from a CSV/JSONL `file`."""
        self._who("create review queues", session, typed, profile)
        overlap = int(overlap or 1)
        if file:
            fill = queues.create_from_file(self.store, name, file, format=file_format or "jsonl",
                                           overlap=overlap)
        else:
            fill = queues.create_from_run(self.store, name, run, select or "false-negatives",
                                          other_run=other_run or None,
                                          band=float(band) if band not in (None, "") else None,
                                          overlap=overlap)
        return fill.to_json()

    def listing(self, session, typed, profile: gr.OAuthProfile | None = None) -> list:
        self._who("list review queues", session, typed, profile)
        return [q.to_json() for q in queues.list_queues(self.store)]

    def next(self, session, typed, queue, profile: gr.OAuthProfile | None = None) -> dict:
        reviewer = self._who("review queues", session, typed, profile)
        return self._state(queue, reviewer, queues.next_item(self.store, queue, reviewer))

    def submit(self, session, typed, queue, item_id, verdict, categories, note,
               profile: gr.OAuthProfile | None = None) -> dict:
        """Label an item; the answer carries the next item for this reviewer (or null)."""
        reviewer = self._who("label queue items", session, typed, profile)
        outcome = queues.submit(self.store, queue, item_id, reviewer, verdict,
                                categories or (), note or "")
        return {"outcome": outcome.to_json(),
                **self._state(queue, reviewer, queues.next_item(self.store, queue, reviewer))}

    def skip(self, session, typed, queue, item_id, profile: gr.OAuthProfile | None = None):
        reviewer = self._who("skip queue items", session, typed, profile)
        outcome = queues.skip(self.store, queue, item_id, reviewer)
        return {"outcome": outcome.to_json(),
                **self._state(queue, reviewer, queues.next_item(self.store, queue, reviewer))}

    def progress(self, session, typed, queue, profile: gr.OAuthProfile | None = None) -> dict:
        reviewer = self._who("see queue progress", session, typed, profile)
        return queues.progress(self.store, queue, reviewer).to_json()

    def wire(self) -> None:
        """Hidden inputs and buttons: only API clients reach these endpoints."""
        with gr.Column(visible=False):
            text = {k: gr.Textbox(label=k) for k in (
                "name", "run", "select", "other_run", "file", "format", "queue", "verdict",
                "categories", "note")}
            number = {k: gr.Number(label=k) for k in ("band", "overlap", "item_id")}
            out = gr.JSON(label="result")
            who = self.bar.inputs
            endpoints = {
                "queue_create": (self.create, [text["name"], text["run"], text["select"],
                                               text["other_run"], number["band"],
                                               number["overlap"], text["file"],
                                               text["format"]]),
                "queue_list": (self.listing, []),
                "queue_next": (self.next, [text["queue"]]),
                "queue_submit": (self.submit, [text["queue"], number["item_id"], text["verdict"],
                                               text["categories"], text["note"]]),
                "queue_skip": (self.skip, [text["queue"], number["item_id"]]),
                "queue_progress": (self.progress, [text["queue"]]),
            }
            for name, (fn, inputs) in endpoints.items():
                gr.Button(visible=False).click(guarded(fn), [*who, *inputs], [out],
                                               api_name=name)
