"""Size limits: what the engine refuses by counting, before a tokenizer, decoder or tensor runs.

Every number is defined here once. Each can be changed with an environment variable named
`GUARD_LAB_<NAME>` (for instance `GUARD_LAB_MAX_CHARS_PER_MESSAGE=200000`), read here, once, at
import; nothing else in the package reads them. Code reads them as `limits.NAME` at call time,
so tests can patch this module.

How the text limits follow from the model (measured 2026-12 on Meta's own tokenizer files,
`models/llama4/tokenizer.model` and `models/llama3/tokenizer.model` in meta-llama/llama-models,
and on the tiny test tokenizer):

- Llama Guard 4 runs with an 8,192-token window (`llama_guard.PATCHED_CHUNK_SIZE`). The limits
  below are worked out for that window, for every family: Llama Guard 3's own window is longer,
  so a deployment that relies on it raises them through the environment.
- Characters per token: natural text is about 4.3 (XSTest 4.33, OpenAI moderation 4.28 on the
  Llama 4 vocabulary; no single prompt of either set above 6.4; this package's Python source
  4.6). The worst case is the longest token: 113 characters in the Llama 4 vocabulary (a space
  and 112 dots; `(" " + "." * 112) * n` really tokenizes at 113 characters a token), 128 bytes
  in the Llama 3 one; runs of spaces reach 64. The tiny test tokenizer (1,024 byte-level tokens)
  stays far below. So no text that fits 8,192 tokens has more than 8,192 * 128 characters:
  that bound never refuses a text the model could take, and refuses everything above it by
  `len()` alone. Between it and what really fits, the exact token count decides
  (`ContextTooLong`), after one tokenizer pass over at most about a million characters.
- Messages: the shortest message costs 6 tokens in a Llama Guard 4 prompt and 4 in a Llama
  Guard 3 or 2 one, and the shortest prompt (one message, every category excluded) 107 to 113.
  So at most 1 + (8192 - 107) // 4 = 2,022 messages fit in 8,192 tokens, for any family.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar

_PREFIX = "GUARD_LAB_"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(_PREFIX + name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{_PREFIX}{name} must be a whole number of 1 or more, got {raw!r}. "
                         f"Unset it to use the default, {default:,}.")
    return value


CONTEXT_TOKENS = 8192
CHARS_PER_TOKEN_BOUND = 128  # the longest token of the Llama 3 and 4 vocabularies, rounded up
TYPICAL_CHARS_PER_TOKEN = 4  # ordinary text, rounded down: for messages that say what fits

# Conversations (guard.core.conversation.validate and from_messages). One message may fill the
# whole window, so a message may hold as much as the conversation.
MAX_CHARS_PER_CONVERSATION = _env_int("MAX_CHARS_PER_CONVERSATION",
                                      CONTEXT_TOKENS * CHARS_PER_TOKEN_BOUND)
MAX_CHARS_PER_MESSAGE = _env_int("MAX_CHARS_PER_MESSAGE", MAX_CHARS_PER_CONVERSATION)
MAX_TURNS = _env_int("MAX_TURNS", 2048)

# Prompt Guard scores every window of a text, so its work grows with the text: it takes what a
# conversation may hold. Scoring the longest such text (about 500 windows of 512 tokens) costs
# less than one full-window Llama Guard 4 pass.
MAX_PROMPT_GUARD_CHARS = _env_int("MAX_PROMPT_GUARD_CHARS", MAX_CHARS_PER_MESSAGE)

# Batches of Llama Guard: at most this many padded tokens per forward pass, counting the
# tokens it may generate (two full 8,192-token prompts, or 50 short ones). A prompt longer than
# the budget still runs, alone.
TOKEN_BUDGET = _env_int("TOKEN_BUDGET", 16384)

# Sweeps and attributions run the model once per variant. 64 holds the largest sweep of the
# largest policy the engine accepts (14 categories and 16 custom ones, each left out and each
# alone: 61 runs) and the attribution of 59 messages with 5 images; past that, the time (the
# cost of 64 ordinary checks) is the limit, not the memory, which the token budget bounds.
MAX_VARIANTS = _env_int("MAX_VARIANTS", 64)

# Custom categories (guard.core.prompts). A name is a few words, a description a short paragraph;
# sixteen at their longest take about half of the window (16 * 1,100 characters, ~4 a token).
MAX_CUSTOM_CATEGORIES = _env_int("MAX_CUSTOM_CATEGORIES", 16)
MAX_CATEGORY_NAME_CHARS = _env_int("MAX_CATEGORY_NAME_CHARS", 100)
MAX_CATEGORY_DESCRIPTION_CHARS = _env_int("MAX_CATEGORY_DESCRIPTION_CHARS", 1000)

# Images (guard.core.images): a 12 MP phone photo passes, a decompression bomb does not.
MAX_IMAGE_BYTES = _env_int("MAX_IMAGE_BYTES", 20 * 1024 * 1024)
MAX_IMAGE_PIXELS = _env_int("MAX_IMAGE_PIXELS", 40_000_000)

# Evaluation (guard.eval): the public sets people use are far smaller (XSTest 450 rows,
# OpenAI moderation 1,680 in 1.2 MB); a batch of 64 short rows already fills the token budget.
MAX_DATASET_BYTES = _env_int("MAX_DATASET_BYTES", 100 * 1024 * 1024)
MAX_DATASET_ROWS = _env_int("MAX_DATASET_ROWS", 20_000)
MAX_EVAL_BATCH_SIZE = _env_int("MAX_EVAL_BATCH_SIZE", 64)

# Time: no interactive call (and no batch of an evaluation) holds the model longer than this.
# It is checked between forward passes, so a call stops at the first pass that ends past it;
# `time_budget` sets it for the calls of one block (the app's GPU boundary does, per call).
CALL_BUDGET_S = _env_int("CALL_BUDGET_S", 120)
_deadline: ContextVar[float | None] = ContextVar("guard_lab_deadline", default=None)


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Model work inside the block must end within `seconds` (checked by `check_time`)."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_time(done: int, total: int) -> None:
    """Between forward passes: refuse to start another once the block's budget is spent."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        from guard.core.errors import TooLarge

        raise TooLarge(
            f"This took longer than this server gives one call (the time budget, "
            f"GUARD_LAB_CALL_BUDGET_S), after {done} of {total} model passes. Ask for less at "
            "once: fewer categories or messages, or a smaller batch.")
