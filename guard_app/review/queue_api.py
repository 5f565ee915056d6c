"""The review queues through the API: /queue_create, /queue_list, /queue_next, /queue_submit,
/queue_skip, /queue_back and /queue_progress, JSON out (labels.queues does the work);
/queue_submit_prompt_guard is /queue_submit with the item's Prompt Guard labels.

Each takes the reviewer first, as the other labelling endpoints do: a typed name, ignored when
the server has reviewer accounts (then sign in with /reviewer_sign_in in the same session).

/queue_create reads a file only as an upload of the caller's (a Gradio file input, which Gradio
checks lies in its upload folder, and guard_app.uploads checks this visitor uploaded), never a
server path; its answers name the file, never where it lies on the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from guard_app import uploads
from guard_app.guarded import guarded
from guard_app.signin import ReviewerBar
from labels import prompt_guard as pg
from labels import queues
from labels.errors import InvalidLabel


def names_only(data: Any) -> Any:
    """A queue's JSON with each `source.file` cut to the file's name (the store keeps the path
    the server read it from; a caller learns only the name it uploaded)."""
    if isinstance(data, list):
        return [names_only(item) for item in data]
    if not isinstance(data, dict):
        return data
    out = {key: names_only(value) for key, value in data.items()}
    source = out.get("source")
    if isinstance(source, dict) and isinstance(source.get("file"), str):
        out["source"] = {**source, "file": Path(source["file"]).name}
    return out


NONE_FITS = "none fits"  # /queue_submit's categories when no category of the family fits


def prompt_guard_labels(text: Any) -> dict[Any, Any] | None:
    """/queue_submit's `prompt_guard`: a JSON object {message index: "benign" / "malicious"},
    or empty for none."""
    if text in (None, "") or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidLabel('prompt_guard is a JSON object such as {"0": "malicious"}: each user '
                           "message's index (the item's user_messages) and benign or malicious.")
    return value


class QueueApi:
    def __init__(self, store: Any, bar: ReviewerBar) -> None:
        self.store, self.bar = store, bar

    def _who(self, action: str, session: Any, typed: Any, profile: Any) -> str:
        return self.bar.who(action, session, typed, profile, need_name=True)

    def _state(self, queue: str, reviewer: str, item: Any) -> dict[str, Any]:
        return {"item": names_only(item.to_json()) if item is not None else None,
                "progress": queues.progress(self.store, queue, reviewer).to_json()}

    def create(self, session, typed, name, run, select, other_run, band, overlap, file,
               file_format, profile: gr.OAuthProfile | None = None,
               request: gr.Request = None) -> dict[str, Any]:
        """A queue from a stored run's rows (`run`, `select`) or from an uploaded CSV/JSONL
        `file` (a path string is refused by Gradio's file input before it gets here). The
        prompt-guard-* selections take Prompt Guard's misses at 0.9 (the CLI's --threshold
        picks another)."""
        self._who("create review queues", session, typed, profile)
        overlap = int(overlap or 1)
        if file:
            uploads.check_owned(file, request)
            fill = queues.create_from_file(self.store, name, file, format=file_format or "jsonl",
                                           overlap=overlap)
        else:
            fill = queues.create_from_run(self.store, name, run, select or "false-negatives",
                                          other_run=other_run or None,
                                          band=float(band) if band not in (None, "") else None,
                                          overlap=overlap)
        return names_only(fill.to_json())

    def listing(self, session, typed, profile: gr.OAuthProfile | None = None) -> list:
        self._who("list review queues", session, typed, profile)
        return names_only([q.to_json() for q in queues.list_queues(self.store)])

    def next(self, session, typed, queue, profile: gr.OAuthProfile | None = None) -> dict:
        reviewer = self._who("review queues", session, typed, profile)
        return self._state(queue, reviewer, queues.next_item(self.store, queue, reviewer))

    def submit(self, session, typed, queue, item_id, verdict, categories, note,
               profile: gr.OAuthProfile | None = None) -> dict:
        """/queue_submit: as before Prompt Guard labels (it gives none)."""
        return self.submit_prompt_guard(session, typed, queue, item_id, verdict, categories,
                                        note, "", profile)

    def submit_prompt_guard(self, session, typed, queue, item_id, verdict, categories, note,
                            prompt_guard="", profile: gr.OAuthProfile | None = None) -> dict:
        """Label an item; the answer carries the next item for this reviewer (or null). An
        unsafe label names a category, or says categories "none fits" (no category of the
        family fits; stored as such). `prompt_guard`: JSON {message index: "benign" or
        "malicious"} for the item's user messages (its `user_messages`), or empty."""
        reviewer = self._who("label queue items", session, typed, profile)
        none_fits = isinstance(categories, str) and " ".join(
            categories.lower().split()) == NONE_FITS
        outcome = queues.submit(self.store, queue, item_id, reviewer, verdict,
                                () if none_fits else categories or (), note or "",
                                none_fits=none_fits,
                                prompt_guard=prompt_guard_labels(prompt_guard))
        return {"outcome": outcome.to_json(),
                **self._state(queue, reviewer, queues.next_item(self.store, queue, reviewer))}

    def skip(self, session, typed, queue, item_id, profile: gr.OAuthProfile | None = None):
        reviewer = self._who("skip queue items", session, typed, profile)
        outcome = queues.skip(self.store, queue, item_id, reviewer)
        return {"outcome": outcome.to_json(),
                **self._state(queue, reviewer, queues.next_item(self.store, queue, reviewer))}

    def back(self, session, typed, queue, item_id, profile: gr.OAuthProfile | None = None
             ) -> dict:
        """Undo: the item this reviewer labelled last (or before `item_id`, when given) with
        their label; submit it again to change it."""
        reviewer = self._who("go back in queues", session, typed, profile)
        found = queues.previous(self.store, queue, reviewer,
                                before=None if item_id in (None, "") else item_id)
        if found is None:
            return {"item": None, "label": None,
                    "progress": queues.progress(self.store, queue, reviewer).to_json()}
        item, label = found
        mine = pg.labels_of(self.store, label.example_id, reviewer)
        return {**self._state(queue, reviewer, item),
                "label": {"label": label.label, "categories": list(label.categories),
                          "none_fits": label.none_fits, "note": label.note},
                "prompt_guard": {str(x.message_index): x.value for x in mine}}

    def progress(self, session, typed, queue, profile: gr.OAuthProfile | None = None) -> dict:
        reviewer = self._who("see queue progress", session, typed, profile)
        return queues.progress(self.store, queue, reviewer).to_json()

    def wire(self) -> None:
        """Hidden inputs and buttons: only API clients reach these endpoints."""
        with gr.Column(visible=False):
            text = {k: gr.Textbox(label=k) for k in (
                "name", "run", "select", "other_run", "format", "queue", "verdict",
                "categories", "note")}
            text["file"] = gr.File(label="file", type="filepath",
                                   file_types=[".csv", ".jsonl", ".json", ".gz"])
            number = {k: gr.Number(label=k) for k in ("band", "overlap", "item_id")}
            text["prompt_guard"] = gr.Textbox(label="prompt_guard")
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
                # The same with Prompt Guard labels: JSON {message index: label}.
                "queue_submit_prompt_guard": (
                    self.submit_prompt_guard, [text["queue"], number["item_id"], text["verdict"],
                                               text["categories"], text["note"],
                                               text["prompt_guard"]]),
                "queue_skip": (self.skip, [text["queue"], number["item_id"]]),
                "queue_back": (self.back, [text["queue"], number["item_id"]]),
                "queue_progress": (self.progress, [text["queue"]]),
            }
            for name, (fn, inputs) in endpoints.items():
                gr.Button(visible=False).click(guarded(fn), [*who, *inputs], [out],
                                               api_name=name)
