"""Both guards on one conversation, as the JSON that the CLI prints and the app's API returns."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from guard.core.conversation import Conversation
from guard.core.prompt_guard_text import check_preprocessing
from guard.core.prompts import CustomCategory
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.engine import Engine
from guard.engines.prompt_guard import PromptGuard


@dataclass
class Guards:
    """The loaded models of a process; either may be missing (failed to load, or not asked for)."""

    llama_guard: Engine | None = None
    prompt_guard: PromptGuard | None = None


def tiny_guards(cache_dir: str | Path) -> Guards:
    """Both tiny offline models, built under `cache_dir` on first use."""
    from guard.engines.llama_guard import LlamaGuard
    from guard.testing.tiny import build_tiny_models

    lg_dir, pg_dir = build_tiny_models(cache_dir)
    return Guards(LlamaGuard.load(lg_dir, device="cpu"), PromptGuard.load(pg_dir, device="cpu"))


def moderate(guards: Guards, conversation: Conversation, excluded: Iterable[str] = (), *,
             threshold: float = DEFAULT_THRESHOLD, custom: Sequence[CustomCategory] = (),
             include_assistant: bool = False,
             prompt_guard_preprocessing: str = "none") -> dict[str, Any]:
    """Run Llama Guard on the last message and Prompt Guard on each user message.

    `prompt_guard_preprocessing`: "none" (the model card) or "llamafirewall"
    (guard.core.prompt_guard_text.collapse_spacing first)."""
    prompt_guard_preprocessing = check_preprocessing(prompt_guard_preprocessing)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    excluded = tuple(excluded)
    if guards.llama_guard is not None:
        verdict = guards.llama_guard.classify(conversation, excluded, threshold=threshold,
                                              custom=custom)
        prompt_plan = guards.llama_guard.plan(conversation, excluded, custom)
        result.update(verdict.to_json())
        result["judged_role"] = prompt_plan.role
        result["excluded"] = list(prompt_plan.excluded)
        result["enabled_categories"] = list(prompt_plan.enabled_codes)
        info = guards.llama_guard.describe()
        result["llama_guard"] = asdict(info) if hasattr(info, "__dataclass_fields__") else info
    if guards.prompt_guard is not None:
        scores = guards.prompt_guard.score_conversation(
            conversation, include_assistant=include_assistant,
            preprocessing=prompt_guard_preprocessing)
        result["prompt_guard"] = {
            **guards.prompt_guard.describe(),
            "preprocessing": prompt_guard_preprocessing,
            "messages": [s.to_json() for s in scores],
            "max_p_malicious": round(max((s.score.p_malicious for s in scores), default=0.0), 6),
        }
    result["timings"] = {
        "llama_guard_s": result.get("seconds"),
        "prompt_guard_s": (round(sum(s["seconds"] for s in result["prompt_guard"]["messages"]), 4)
                           if "prompt_guard" in result else None),
        "total_s": round(time.perf_counter() - started, 4),
    }
    return result
