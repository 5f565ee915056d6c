"""LlamaFirewall-style scanners: Guard Lab's engine inside an agent loop.

LlamaFirewall (meta-llama/PurpleLlama) runs scanners on each message of an agent's trace and
acts on their decision; it has a Prompt Guard scanner but none for Llama Guard. These two keep
its split between the model (which gives a score) and the policy (a threshold):

- `LlamaGuardScanner(engine)`: harmful content; Llama Guard judges the last message in the
  context of the trace before it; BLOCK when p_unsafe >= 0.5, the only published threshold;
- `PromptGuardScanner(prompt_guard)`: jailbreaks and prompt injection in the message's text,
  over every 512-token window; BLOCK when p_malicious >= 0.9, LlamaFirewall's own threshold.

`scan(message or trace)` returns a `ScanResult`, which unpacks as `score, decision, reason`.
A message is a string (a user message), a mapping with `role` and `content` (OpenAI's chat
shape, text and data-URL image parts), or an object with `.role` and `.content` (LlamaFirewall's
`Message`, whose role is an enum). A trace is a list of them. Llama Guard's conversations
alternate user and agent turns, so a trace is folded into one: system messages are left out
(Llama Guard has no system turn), tool and memory outputs count as user turns (input that came
into the agent, not words the agent said), and neighbouring turns of one side are joined.

Errors are raised, never turned into ALLOW: a scanner that cannot judge must not wave a message
through. The scanners are synchronous; in async code, `await asyncio.to_thread(scanner.scan,
...)`. Nothing here imports torch: the loaded models are passed in.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from guard.adapters.messages import chat_conversation
from guard.core.conversation import Conversation
from guard.core.errors import InvalidConversation
from guard.core.prompts import CustomCategory
from guard.core.verdict import DEFAULT_THRESHOLD
from guard.engines.engine import Engine

# guard.engines.prompt_guard.FIREWALL_THRESHOLD, not imported from there because that imports torch.
PROMPT_GUARD_THRESHOLD = 0.9
USER_SIDE = {"user": "user", "tool": "user", "memory": "user", "assistant": "assistant"}


class ScanDecision(enum.Enum):
    """LlamaFirewall's decisions, by the same values."""

    ALLOW = "allow"
    HUMAN_IN_THE_LOOP_REQUIRED = "human_in_the_loop_required"
    BLOCK = "block"


class ScanResult(NamedTuple):
    score: float
    decision: ScanDecision
    reason: str


def decide(score: float, block: float, review: float | None) -> ScanDecision:
    """BLOCK at `block` or above; HUMAN_IN_THE_LOOP_REQUIRED from `review` up to it."""
    if score >= block:
        return ScanDecision.BLOCK
    if review is not None and score >= review:
        return ScanDecision.HUMAN_IN_THE_LOOP_REQUIRED
    return ScanDecision.ALLOW


def _role_content(message: Any) -> tuple[str, list[Any]]:
    """(role, content parts) of one message; an agent's tool calls are part of what it said."""
    if isinstance(message, str):
        return "user", [{"type": "text", "text": message}]
    get = message.get if isinstance(message, Mapping) else lambda k: getattr(message, k, None)
    role, content, calls = get("role"), get("content"), get("tool_calls")
    role = getattr(role, "value", role)  # LlamaFirewall's Role enum
    if isinstance(content, list):
        parts = list(content)
    else:
        parts = [{"type": "text", "text": content}] if content else []
    if calls:
        parts.append({"type": "text", "text": "\n" + json.dumps(calls, default=str)})
    return (str(role).lower() if role is not None else ""), parts


def _text(parts: list[Any]) -> str:
    return "".join(str(p.get("text") or "") for p in parts
                   if isinstance(p, Mapping) and p.get("type") == "text")


def fold_trace(trace: Sequence[Any]) -> list[dict[str, Any]]:
    """A trace as alternating user/assistant chat messages (see the module's note).

    A message with nothing in it (an agent turn that only handed over) is left out, except the
    last one, which is the message to judge: that raises InvalidConversation.
    """
    folded: list[dict[str, Any]] = []
    for n, message in enumerate(trace, start=1):
        role, parts = _role_content(message)
        if role == "system":
            continue
        if role not in USER_SIDE:
            raise InvalidConversation(f"Trace message {n} has role '{role}'; use user, "
                                      "assistant, tool, memory or system.")
        if not parts or not (_text(parts).strip() or len(parts) > 1):
            if n == len(trace):
                raise InvalidConversation(f"Trace message {n}, the one to judge, is empty.")
            continue
        side = USER_SIDE[role]
        if folded and folded[-1]["role"] == side:
            folded[-1]["content"] += [{"type": "text", "text": "\n\n"}, *parts]
        else:
            folded.append({"role": side, "content": parts})
    for message in folded:  # the text parts of one turn become one text; images stay
        others = [p for p in message["content"]
                  if not (isinstance(p, Mapping) and p.get("type") == "text")]
        message["content"] = [{"type": "text", "text": _text(message["content"]).strip()},
                              *others]
    return folded


def trace_of(message: Any, past_trace: Sequence[Any] | None = None) -> list[Any]:
    """`message` may itself be a trace (a list of messages); `past_trace` goes before it."""
    now = list(message) if isinstance(message, list) else [message]
    return [*(past_trace or ()), *now]


class LlamaGuardScanner:
    """Llama Guard on the last message of a trace. `engine` is any `guard.engines.engine.Engine`."""

    name = "Llama Guard Scanner"

    def __init__(self, engine: Engine, *, block_threshold: float = DEFAULT_THRESHOLD,
                 review_threshold: float | None = None, excluded: Iterable[str] = (),
                 custom: Sequence[CustomCategory] = ()) -> None:
        self.engine = engine
        self.block_threshold = block_threshold
        self.review_threshold = review_threshold
        self.excluded = tuple(excluded)
        self.custom = tuple(custom)

    def conversation(self, message: Any, past_trace: Sequence[Any] | None = None
                     ) -> Conversation:
        return chat_conversation(fold_trace(trace_of(message, past_trace)))

    def scan(self, message: Any, past_trace: Sequence[Any] | None = None) -> ScanResult:
        conversation = self.conversation(message, past_trace)
        verdict = self.engine.classify(conversation, self.excluded,
                                       threshold=self.block_threshold, custom=self.custom)
        decision = decide(verdict.p_unsafe, self.block_threshold, self.review_threshold)
        bar = (self.block_threshold if decision is ScanDecision.BLOCK
               or self.review_threshold is None else self.review_threshold)
        judged = "agent's" if conversation.judged_role == "Agent" else "user's"
        if decision is ScanDecision.ALLOW:
            reason = (f"Llama Guard found no unsafe content in the {judged} message (p_unsafe "
                      f"{verdict.p_unsafe:.3f} < {bar:.2f}).")
        else:
            named = ", ".join(f"{c.code} {c.name}" for c in verdict.categories)
            reason = (f"Llama Guard judged the {judged} message unsafe (p_unsafe "
                      f"{verdict.p_unsafe:.3f} >= {bar:.2f}){': ' + named if named else ''}.")
        return ScanResult(verdict.p_unsafe, decision, reason)


class PromptGuardScanner:
    """Prompt Guard on the text of the last message. `prompt_guard` is a
    `guard.engines.prompt_guard.PromptGuard` (anything with `score(text).p_malicious`)."""

    name = "Prompt Guard Scanner"

    def __init__(self, prompt_guard: Any, *, block_threshold: float = PROMPT_GUARD_THRESHOLD,
                 review_threshold: float | None = None) -> None:
        self.prompt_guard = prompt_guard
        self.block_threshold = block_threshold
        self.review_threshold = review_threshold

    def scan(self, message: Any, past_trace: Sequence[Any] | None = None) -> ScanResult:
        trace = trace_of(message, past_trace)
        if not trace:
            raise InvalidConversation("Nothing to scan: the trace is empty.")
        text = _text(_role_content(trace[-1])[1])
        if not text.strip():
            raise InvalidConversation("The message has no text for Prompt Guard to score.")
        score = self.prompt_guard.score(text)
        decision = decide(score.p_malicious, self.block_threshold, self.review_threshold)
        bar = (self.block_threshold if decision is ScanDecision.BLOCK
               or self.review_threshold is None else self.review_threshold)
        if decision is ScanDecision.ALLOW:
            reason = (f"No prompt injection or jailbreak detected (p_malicious "
                      f"{score.p_malicious:.3f} < {bar:.2f}).")
        else:
            where = f" in window {score.window + 1} of {score.windows}" if score.windows > 1 else ""
            reason = (f"Likely prompt injection or jailbreak{where} (p_malicious "
                      f"{score.p_malicious:.3f} >= {bar:.2f}).")
        return ScanResult(score.p_malicious, decision, reason)
