"""The Moderate tab's logic: one run of both guards on the page's conversation. No gradio.

The conversation is built and checked here; the models run in one GPU call (guard_app.gpu).
"""

from __future__ import annotations

from collections.abc import Sequence

from guard.core.categories import LLAMA_GUARD_4_CATEGORIES, Family
from guard.core.conversation import MAX_IMAGES
from guard.core.errors import GuardError, ModelLoadError
from guard.core.prompt_guard_text import check_preprocessing
from guard.core.prompts import check_custom, plan
from guard.engines.engine import ModelInfo
from guard.engines.service import Guards
from guard_app import gpu
from guard_app.conversation import to_conversation
from guard_app.models import PromptGuardChoices
from guard_app.run import (  # noqa: F401 (shared by every screen; named here as before)
    PageRun,
    custom_categories,
    engine_family,
    engine_info,
    engine_line,
    excluded_codes,
)

CODES = tuple(c.code for c in LLAMA_GUARD_4_CATEGORIES)
MAX_CUSTOM = 8


def add_custom(custom: Sequence[dict[str, str]], name: str, description: str
               ) -> list[dict[str, str]]:
    """The custom categories with one more, checked as the prompt will hold it (guard.core.prompts)."""
    name = " ".join((name or "").split()).rstrip(".")
    if not name:
        raise GuardError("Give the custom category a short name, e.g. 'Medical misinformation'.")
    if len(custom) >= MAX_CUSTOM:
        raise GuardError(f"At most {MAX_CUSTOM} custom categories. Clear some first.")
    if any(c["name"].lower() == name.lower() for c in custom):
        raise GuardError(f"There is already a custom category named '{name}'.")
    new = [*custom, {"name": name, "description": " ".join((description or "").split())}]
    check_custom(custom_categories(new))  # lengths, markers and control tokens
    return new


def run_guards(guards: Guards, prompt_guards: PromptGuardChoices | None, turns: list[dict],
               ticked: Sequence[str], custom: Sequence[dict[str, str]], threshold: float,
               pg_choice: str | None, *, max_images: int = MAX_IMAGES,
               pg_preprocessing: str = "none") -> PageRun:
    """One run: the moderate() JSON, the prompt Llama Guard saw, and notes for the page.

    The conversation is built and checked here; the models run in one GPU call (guard_app.gpu).
    """
    conversation = to_conversation(turns, max_images)
    excluded = excluded_codes(ticked, engine_family(guards))
    custom_cats = custom_categories(custom)
    notes = []
    if not ticked and not custom:
        notes.append("No category is ticked: Llama Guard has an empty policy to judge against.")
    prompt_guard, pg_key = guards.prompt_guard, None
    if prompt_guards is not None and pg_choice:
        try:
            prompt_guard, pg_key = prompt_guards.get(pg_choice), pg_choice
        except ModelLoadError as exc:
            prompt_guard = None
            notes.append(f"Prompt Guard {pg_choice} did not load: {exc}")
    if guards.llama_guard is None and prompt_guard is None:
        raise ModelLoadError("No model is loaded, so nothing can be judged. The banner at the top "
                             "says why; fix that and restart, or start with --tiny.")
    if guards.llama_guard is None:
        notes.append("Llama Guard is not loaded: only Prompt Guard ran (see the banner).")
    prompt_plan = (guards.llama_guard.plan(conversation, excluded, custom_cats)
                   if guards.llama_guard is not None
                   else plan(conversation, excluded, custom=custom_cats))
    result = gpu.moderate(gpu.register(guards, prompt_guards), gpu.plain(conversation),
                          list(excluded), threshold, gpu.plain_custom(custom_cats),
                          prompt_guard=pg_key, use_prompt_guard=prompt_guard is not None,
                          pg_preprocessing=check_preprocessing(pg_preprocessing))
    return PageRun(result=result, prompt=prompt_plan.prompt, notes=notes,
                   turns=[dict(t, images=list(t["images"])) for t in turns],
                   excluded=list(excluded), custom=list(custom),
                   pg_label=(prompt_guards.labels.get(pg_choice, "") if prompt_guards and pg_choice
                             else ""))


def explore_inputs(guards: Guards, turns: list[dict], ticked: Sequence[str] | None,
                   custom: Sequence[dict[str, str]], max_images: int = MAX_IMAGES) -> tuple:
    """What the Explore panel runs on: (engine, conversation, excluded, custom categories)."""
    if guards.llama_guard is None:
        raise ModelLoadError("Llama Guard is not loaded, so there is nothing to explore. The "
                             "banner at the top says why.")
    return (guards.llama_guard, to_conversation(turns, max_images),
            excluded_codes(ticked, engine_family(guards)), custom_categories(custom))


def images_off_note(info: ModelInfo) -> str:
    """Why the page takes no images, when the loaded engine or family reads text only."""
    how = ("llama.cpp runs Llama Guard on text only" if info.engine == "llama-cpp"
           else f"{Family(info.family).label} reads text only")
    return (f"*Images are off on this server: {how}. Llama Guard 4 on the transformers engine "
            f"(or an OpenAI-compatible server serving it) judges images.*")
