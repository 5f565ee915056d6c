"""The page's run of both guards as every screen shares it: `PageRun`, and what a run is over.

Gradio-free. The Moderate tab makes a PageRun, the Review panel saves it, and both ask whether
the shown run still matches the page (`fingerprint`): a run is out of date once the
conversation, the categories, the policy or the model changes under it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard.core.categories import Family, categories_for
from guard.core.prompts import CustomCategory
from guard.engines.engine import ModelInfo
from guard.engines.service import Guards, Moderation
from guard_app import gpu

OUT_OF_DATE = ("The result shown is out of date: the conversation or the settings changed after "
               "the run. Press Run both guards again, then review the new result.")


@dataclass(frozen=True)
class PageRun:
    """One run of both guards as the page keeps it (in gr.State) and the Review panel saves it.

    `result` is `Moderation.to_json()`: it crossed the GPU boundary as plain data, and it is
    what the page shows as JSON; `moderation` is the same, typed. `fingerprint` is what the
    page held when it ran (see `fingerprint`): "" for runs made outside the page.
    """

    result: dict[str, Any]
    prompt: str  # the exact prompt Llama Guard saw ("" when it did not run)
    notes: list[str]
    turns: list[dict[str, Any]]  # the page's turns it ran on
    excluded: list[str]
    custom: list[dict[str, str]]  # the custom categories, {name, description}
    pg_label: str = ""  # how the page named the Prompt Guard choice
    fingerprint: str = ""

    @property
    def moderation(self) -> Moderation:
        return Moderation.from_json(self.result)

    @property
    def judged(self) -> bool:
        """Whether Llama Guard gave a verdict (the Review panel has something to review)."""
        return "p_unsafe" in self.result


def fingerprint(turns: Sequence[dict[str, Any]] | None, ticked: Sequence[str] | None,
                custom: Sequence[dict[str, str]] | None, pg_choice: str | None = None,
                firewall: bool = False, policy: str | None = None) -> str:
    """What a run depends on besides the threshold (which the page re-applies to the shown run)."""
    data = {"turns": [[t["role"], t["text"], list(t["images"])] for t in turns or ()],
            "ticked": sorted(ticked or ()), "custom": [dict(c) for c in custom or ()],
            "pg": pg_choice or "", "firewall": bool(firewall), "policy": policy or ""}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def out_of_date(run: PageRun | None, now: str) -> bool:
    """Whether the shown run no longer matches the page (`now`: the page's fingerprint)."""
    return run is not None and bool(run.fingerprint) and run.fingerprint != now


def engine_info(guards: Guards) -> ModelInfo | None:
    return guards.llama_guard.describe() if guards.llama_guard is not None else None


def engine_family(guards: Guards) -> Family:
    """The loaded Llama Guard's family; Llama Guard 4's categories when none is loaded."""
    info = engine_info(guards)
    return Family(info.family) if info is not None else Family.LLAMA_GUARD_4


def model_name(name: str) -> str:
    """A model's name without the server's folders: '/srv/models/llama-guard-4-tiny' ->
    'llama-guard-4-tiny'; a hub id ('meta-llama/Llama-Guard-4-12B') stays whole."""
    text = str(name or "")
    if text.startswith(("/", "~", ".")) or "\\" in text or text.count("/") > 1:
        return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return text


def engine_line(info: ModelInfo) -> str:
    """e.g. 'Llama-Guard-3-1B.gguf (Llama Guard 3) on llama-cpp, cpu'; no server folders."""
    return f"{model_name(info.name)} ({Family(info.family).label}) on {info.engine}, {info.device}"


def excluded_codes(ticked: Sequence[str] | None, family: Family | str = Family.LLAMA_GUARD_4
                   ) -> tuple[str, ...]:
    """The family's fixed categories left unticked."""
    ticked = set(ticked or ())
    return tuple(c.code for c in categories_for(family) if c.code not in ticked)


def custom_categories(custom: Sequence[dict[str, str]]) -> tuple[CustomCategory, ...]:
    """The page's custom categories ({name, description}) as the engine takes them."""
    return gpu.custom_of(custom)


def shown_result(result: dict[str, Any]) -> dict[str, Any]:
    """The run's JSON as the page shows it: the models by name, never the server's folders
    (the stored run keeps what the engine reported)."""
    shown = dict(result)
    if "model" in shown:
        shown["model"] = model_name(shown["model"])
    for key in ("llama_guard", "prompt_guard"):
        if isinstance(shown.get(key), dict) and "name" in shown[key]:
            shown[key] = {**shown[key], "name": model_name(shown[key]["name"])}
    return shown
