"""GuardBench's moderation callback over any Llama Guard engine.

GuardBench (github.com/AmenRa/guardbench) evaluates a guard through a function that takes a
batch of conversations, each a list of `{"role": "user" | "assistant", "content": str}`, and
returns one probability of unsafe per conversation; it thresholds them at 0.5 (`> 0.5`).
Keyword arguments of `guardbench.benchmark` are passed on to that function, so the engine
travels as one:

    from guardbench import benchmark
    from guard.adapters.guardbench import moderate
    from guard.engines.llama_guard import LlamaGuard

    engine = LlamaGuard.load("meta-llama/Llama-Guard-4-12B")
    benchmark(moderate=moderate, engine=engine, model_name="llama-guard-4",
              datasets=["xstest"], batch_size=32)

The score is p_unsafe, the probability of the `unsafe` decision token (the model cards'
classifier score), for the last message of each conversation: Llama Guard judges the user's
prompt when the conversation ends with it, the assistant's answer when it ends with that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from guard.core.conversation import from_messages
from guard.core.errors import GuardError, InvalidConversation
from guard.core.prompts import CustomCategory
from guard.engines.engine import Engine

Conversations = Sequence[Sequence[Mapping[str, Any]]]


def moderate(conversations: Conversations, engine: Engine, *, excluded: Iterable[str] = (),
             custom: Sequence[CustomCategory] = (), batch_size: int | None = None
             ) -> list[float]:
    """p_unsafe of each conversation, in order, from one `classify_batch` call.

    A conversation Llama Guard cannot take (empty text, roles out of order) raises
    InvalidConversation naming its position in the batch, rather than scoring it silently.
    """
    built = []
    for n, messages in enumerate(conversations):
        try:
            built.append(from_messages(list(messages)))
        except GuardError as exc:
            raise InvalidConversation(f"Conversation {n} of the batch: {exc}") from None
    if not built:
        return []
    verdicts = engine.classify_batch(built, tuple(excluded), custom=custom,
                                     batch_size=batch_size)
    return [float(v.p_unsafe) for v in verdicts]
