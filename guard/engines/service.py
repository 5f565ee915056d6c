"""Both guards on one conversation: `moderate()` and its typed result, `Moderation`.

`Moderation.to_json()` is the JSON that `python -m guard classify` prints and the app's API
returns; `Moderation.from_json` rebuilds the object from it, so the JSON can cross a process
boundary (the app's ZeroGPU worker pickles plain data only). No torch at import.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard.core.conversation import Conversation
from guard.core.prompt_guard_text import MessageScore, PromptGuardInfo, check_preprocessing
from guard.core.prompts import CustomCategory, conversation_markers
from guard.core.verdict import DEFAULT_THRESHOLD, Verdict
from guard.engines.engine import Engine, ModelInfo

if TYPE_CHECKING:
    from guard.engines.prompt_guard import PromptGuard


@dataclass
class Guards:
    """The loaded models of a process; either may be missing (failed to load, or not asked for)."""

    llama_guard: Engine | None = None
    prompt_guard: PromptGuard | None = None


def tiny_guards(cache_dir: str | Path) -> Guards:
    """Both tiny offline models, built under `cache_dir` on first use."""
    from guard.engines.llama_guard import LlamaGuard
    from guard.engines.prompt_guard import PromptGuard
    from guard.testing.tiny import build_tiny_models

    lg_dir, pg_dir = build_tiny_models(cache_dir)
    return Guards(LlamaGuard.load(lg_dir, device="cpu"), PromptGuard.load(pg_dir, device="cpu"))


@dataclass(frozen=True)
class PromptGuardResult:
    """Prompt Guard on the messages of one conversation, each scored on its own."""

    model: PromptGuardInfo
    preprocessing: str  # guard.core.prompt_guard_text.PREPROCESSING
    messages: tuple[MessageScore, ...]

    @property
    def max_p_malicious(self) -> float:
        """The highest score over the messages (0.0 when none was scored)."""
        return max((m.score.p_malicious for m in self.messages), default=0.0)

    @property
    def seconds(self) -> float:
        """Prompt Guard's time, as the sum of the messages' rounded times."""
        return sum(round(m.score.seconds, 4) for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        return {**self.model.to_json(), "preprocessing": self.preprocessing,
                "messages": [m.to_json() for m in self.messages],
                "max_p_malicious": round(self.max_p_malicious, 6)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromptGuardResult:
        return cls(PromptGuardInfo.from_json(data), data["preprocessing"],
                   tuple(MessageScore.from_json(m) for m in data["messages"]))


@dataclass(frozen=True)
class Timings:
    """Seconds, rounded to 0.1 ms; a guard that did not run has None."""

    llama_guard_s: float | None
    prompt_guard_s: float | None
    total_s: float

    def to_json(self) -> dict[str, Any]:
        return {"llama_guard_s": self.llama_guard_s, "prompt_guard_s": self.prompt_guard_s,
                "total_s": self.total_s}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timings:
        return cls(data["llama_guard_s"], data["prompt_guard_s"], data["total_s"])


@dataclass(frozen=True)
class Moderation:
    """What `moderate()` found: Llama Guard's verdict on the last message (None when Llama
    Guard is not loaded, and then so are its prompt's facts) and Prompt Guard's scores (None
    when it is not loaded)."""

    verdict: Verdict | None
    judged_role: str | None  # "User" or "Agent": whose message the prompt asked about
    excluded: tuple[str, ...]  # the codes the prompt left out
    enabled_categories: tuple[str, ...]  # the codes the prompt offered
    llama_guard: ModelInfo | None
    prompt_guard: PromptGuardResult | None
    timings: Timings

    def to_json(self) -> dict[str, Any]:
        """The JSON of `python -m guard classify`: the verdict's fields at the top level, then
        `judged_role`, `excluded`, `enabled_categories`, `llama_guard`; `prompt_guard`;
        `timings`."""
        data: dict[str, Any] = {}
        if self.verdict is not None:
            data.update(self.verdict.to_json())
            data["judged_role"] = self.judged_role
            data["excluded"] = list(self.excluded)
            data["enabled_categories"] = list(self.enabled_categories)
            data["llama_guard"] = self.llama_guard.to_json() if self.llama_guard else None
        if self.prompt_guard is not None:
            data["prompt_guard"] = self.prompt_guard.to_json()
        data["timings"] = self.timings.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Moderation:
        """The moderation `to_json` wrote: `from_json(m.to_json()).to_json() == m.to_json()`."""
        judged = "verdict" in data
        info = data.get("llama_guard") if judged else None
        pg = data.get("prompt_guard")
        return cls(
            verdict=Verdict.from_json(data) if judged else None,
            judged_role=data["judged_role"] if judged else None,
            excluded=tuple(data["excluded"]) if judged else (),
            enabled_categories=tuple(data["enabled_categories"]) if judged else (),
            llama_guard=ModelInfo.from_json(info) if info is not None else None,
            prompt_guard=PromptGuardResult.from_json(pg) if pg is not None else None,
            timings=Timings.from_json(data["timings"]))


def moderate(guards: Guards, conversation: Conversation, excluded: Iterable[str] = (), *,
             threshold: float = DEFAULT_THRESHOLD, custom: Sequence[CustomCategory] = (),
             include_assistant: bool = False,
             prompt_guard_preprocessing: str = "none") -> Moderation:
    """Run Llama Guard on the last message and Prompt Guard on each user message.

    `prompt_guard_preprocessing`: "none" (the model card) or "llamafirewall"
    (guard.core.prompt_guard_text.collapse_spacing first)."""
    prompt_guard_preprocessing = check_preprocessing(prompt_guard_preprocessing)
    started = time.perf_counter()
    excluded = tuple(excluded)
    verdict, prompt_plan, info, scored = None, None, None, None
    if guards.llama_guard is not None:
        verdict = guards.llama_guard.classify(conversation, excluded, threshold=threshold,
                                              custom=custom)
        prompt_plan = guards.llama_guard.plan(conversation, excluded, custom)
        info = guards.llama_guard.describe()
        if conversation_markers(conversation):
            verdict = dataclasses.replace(verdict, prompt_marker_text=True)
    if guards.prompt_guard is not None:
        scores = guards.prompt_guard.score_conversation(
            conversation, include_assistant=include_assistant,
            preprocessing=prompt_guard_preprocessing)
        scored = PromptGuardResult(guards.prompt_guard.describe(), prompt_guard_preprocessing,
                                   tuple(scores))
    timings = Timings(
        llama_guard_s=round(verdict.seconds, 4) if verdict is not None else None,
        prompt_guard_s=round(scored.seconds, 4) if scored is not None else None,
        total_s=round(time.perf_counter() - started, 4))
    return Moderation(
        verdict=verdict, judged_role=prompt_plan.role if prompt_plan else None,
        excluded=prompt_plan.excluded if prompt_plan else (),
        enabled_categories=prompt_plan.enabled_codes if prompt_plan else (),
        llama_guard=info, prompt_guard=scored, timings=timings)
