"""The GPU boundary: every model call of the app, as functions over plain data.

On a ZeroGPU Space, `spaces.GPU` runs a wrapped function in a forked worker and sends its
arguments and result through pickling queues. So the functions here take and return plain data
only (messages with PNG bytes, codes, numbers, strings; JSON-able results), and the models stay
in this module's state: `register` is called once at start-up, before any worker forks, and the
calls name the models by the integer it returns. One run of both guards is one GPU call.

Durations. ZeroGPU reserves a GPU for the `duration` a call asks for, and a visitor's small
daily quota must cover that reservation before the call is scheduled; shorter requests are also
scheduled first. The default (60 s) would spend a visitor's quota on one click. Llama Guard 4 12B
on an H200 slice prefills its whole 8,192-token context in well under a second and decodes the
3-5 answer tokens in tens of milliseconds (bench/bench_full_size.py gives the floor); the fixed
cost is the worker's start, which moves the weights onto the GPU (~24 GB bf16: seconds). So each
call asks for a base that covers a cold start, plus a step per unit of batched work:

- moderate (one conversation, both guards): 20 s + 2 s per image;
- sweep / attribution (one batched pass per memory-budgeted batch): 20 s + 1 s per variant;
- per-category scores (two passes): 30 s;
- evaluation (one call per batch of rows; the label store stays in the server): 20 s + 1 s per row;
- Prompt Guard alone (the `prompt_guard` tool): 20 s + 1 s per text;

all capped at `MAX_DURATION_S`. Size. ZeroGPU lends half an RTX Pro 6000 Blackwell (`size="large"`,
48 GB, the default and 1x quota) or a whole one (`"xlarge"`, 96 GB, 2x quota); Llama Guard 4 in
bf16 (about 24 GB of weights) fits `large`, so every call asks for `GPU_SIZE` (GUARD_LAB_GPU_SIZE,
default `large`). Off ZeroGPU (`spaces` not installed, or a Space on dedicated
hardware, where `spaces.GPU` does nothing) the functions run in-process.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from guard.core import limits
from guard.core.conversation import Conversation, Turn
from guard.core.errors import ModelLoadError
from guard.core.prompts import CustomCategory
from guard.engines.service import Guards
from guard.engines.service import moderate as moderate_both

try:  # Hugging Face's ZeroGPU package; absent elsewhere.
    import spaces
except ImportError:
    spaces = None

MAX_DURATION_S = 120
GPU_SIZES = ("large", "xlarge")


def gpu_size(environ: Any = None) -> str:
    """The ZeroGPU size every call asks for: GUARD_LAB_GPU_SIZE, default `large` (48 GB)."""
    import os

    size = ((environ if environ is not None else os.environ).get("GUARD_LAB_GPU_SIZE")
            or "large").strip().lower()
    if size not in GPU_SIZES:
        raise ValueError(f"GUARD_LAB_GPU_SIZE must be large (48 GB, enough for Llama Guard 4 in "
                         f"bf16) or xlarge (96 GB, twice the quota), got {size!r}")
    return size


try:
    GPU_SIZE = gpu_size()
except ValueError as exc:  # read when the app starts: one line, then exit
    raise SystemExit(f"error: {exc}") from None
# A conversation: [{"role", "text", "images": [png bytes, ...], "parts": [text, ...]}]; "parts"
# only when a message had several text parts (guard.core.conversation.Turn).
Plain = list[dict[str, Any]]


@dataclass
class Models:
    guards: Guards
    prompt_guards: Any = None  # guard_app.models.PromptGuardChoices, or None


_MODELS: dict[int, Models] = {}
_SLOTS = itertools.count(1)


def register(guards: Guards, prompt_guards: Any = None) -> int:
    """Keep loaded models in module state; the returned slot names them in GPU calls.

    The same models registered again get the same slot.
    """
    for slot, known in _MODELS.items():
        if known.guards is guards and known.prompt_guards is prompt_guards:
            return slot
    slot = next(_SLOTS)
    _MODELS[slot] = Models(guards, prompt_guards)
    return slot


def prompt_guard_choices(guards: Guards) -> Any:
    """The Prompt Guard choices registered with `guards` (None when none were): the server's
    side of what a GPU call picks by slot, so both pick the same model."""
    return next((m.prompt_guards for m in _MODELS.values() if m.guards is guards), None)


def models(slot: int) -> Models:
    try:
        return _MODELS[slot]
    except KeyError:
        raise ModelLoadError("The models of this page are gone (the server restarted?). "
                             "Reload the page.") from None


def on_gpu(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """spaces.GPU(duration=...) where ZeroGPU's package is installed, else the function itself.

    Inside, the call's model work has a time budget (guard.core.limits.check_time between forward
    passes): GUARD_LAB_CALL_BUDGET_S, and on ZeroGPU also a little less than the duration asked
    for, so a call that would run over stops with a clear message instead of being aborted.
    """
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def budgeted(*args: Any, **kwargs: Any) -> Any:
            seconds = limits.CALL_BUDGET_S
            if spaces is not None:
                seconds = min(seconds, max(1, duration(*args, **kwargs) - 2))
            with limits.time_budget(seconds):
                return fn(*args, **kwargs)
        if spaces is None:
            return budgeted
        return spaces.GPU(duration=duration, size=GPU_SIZE)(budgeted)
    return wrap


def _capped(seconds: float) -> int:
    return int(min(MAX_DURATION_S, seconds))


# Plain data in, objects out (and back)


def plain(conversation: Conversation) -> Plain:
    """A validated conversation as picklable data; images as lossless PNG bytes."""
    return [{"role": t.role, "text": t.text, "images": [_png(i) for i in t.images],
             "parts": list(t.parts)} for t in conversation.turns]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def conversation_of(data: Plain) -> Conversation:
    """The conversation `plain` made; it was validated before it crossed the boundary."""
    turns = []
    for turn in data:
        images = []
        for png in turn["images"]:
            with Image.open(io.BytesIO(png)) as image:
                images.append(image.convert("RGB"))
        turns.append(Turn(turn["role"], turn["text"], tuple(images),
                          tuple(turn.get("parts") or ())))
    return Conversation(tuple(turns))


def plain_custom(custom: Sequence[CustomCategory]) -> list[dict[str, str]]:
    return [{"name": c.name, "description": c.description} for c in custom]


def custom_of(data: Sequence[dict[str, str]]) -> tuple[CustomCategory, ...]:
    return tuple(CustomCategory(c["name"], c["description"]) for c in data)


def _images(conversation: Plain) -> int:
    return sum(len(t["images"]) for t in conversation)


# The GPU calls


def _moderate_s(slot: int, conversation: Plain, *args: Any, **kwargs: Any) -> int:
    return _capped(20 + 2 * _images(conversation))


@on_gpu(_moderate_s)
def moderate(slot: int, conversation: Plain, excluded: list[str], threshold: float,
             custom: list[dict[str, str]] | None = None, prompt_guard: str | None = None,
             use_prompt_guard: bool = True, pg_preprocessing: str = "none") -> dict[str, Any]:
    """Both guards on one conversation: the JSON of `python -m guard classify`.

    `prompt_guard` names a Prompt Guard choice of the page (None: the default one);
    `use_prompt_guard=False` runs Llama Guard alone; `pg_preprocessing` is how Prompt Guard
    reads the messages ("none" or "llamafirewall", guard.core.prompt_guard_text).
    """
    loaded = models(slot)
    pg = loaded.guards.prompt_guard
    if not use_prompt_guard:
        pg = None
    elif prompt_guard is not None and loaded.prompt_guards is not None:
        pg = loaded.prompt_guards.get(prompt_guard)
    return moderate_both(Guards(loaded.guards.llama_guard, pg), conversation_of(conversation),
                         excluded, threshold=threshold, custom=custom_of(custom or ()),
                         prompt_guard_preprocessing=pg_preprocessing).to_json()


def _sweep_s(slot: int, conversation: Plain, excluded: list[str], threshold: float,
             only_one: bool = False, custom: list[dict[str, str]] | None = None) -> int:
    enabled = max(0, 14 - len(excluded)) + len(custom or ())  # 14: the largest family
    return _capped(20 + 1 + enabled * (2 if only_one else 1))


def _attribution_s(slot: int, conversation: Plain, *args: Any, **kwargs: Any) -> int:
    return _capped(20 + len(conversation) + _images(conversation))


@on_gpu(_sweep_s)
def sweep(slot: int, conversation: Plain, excluded: list[str], threshold: float,
          only_one: bool = False, custom: list[dict[str, str]] | None = None) -> dict[str, Any]:
    from guard_app.explore import logic as explore_view

    return explore_view.sweep_json(_llama_guard(slot), conversation_of(conversation), excluded,
                                   threshold=threshold, only_one=only_one,
                                   custom=custom_of(custom or ()))


@on_gpu(_attribution_s)
def attribution(slot: int, conversation: Plain, excluded: list[str], threshold: float,
                custom: list[dict[str, str]] | None = None) -> dict[str, Any]:
    from guard_app.explore import logic as explore_view

    return explore_view.attribution_json(_llama_guard(slot), conversation_of(conversation),
                                         excluded, threshold=threshold,
                                         custom=custom_of(custom or ()))


def _scores_s(*args: Any, **kwargs: Any) -> int:
    return 30


@on_gpu(_scores_s)
def category_scores(slot: int, conversation: Plain, excluded: list[str], threshold: float,
                    custom: list[dict[str, str]] | None = None) -> dict[str, Any]:
    from guard_app.explore import logic as explore_view

    return explore_view.scores_json(_llama_guard(slot), conversation_of(conversation), excluded,
                                    threshold=threshold, custom=custom_of(custom or ()))


def _judge_s(slot: int, rows: list[dict[str, Any]], *args: Any, **kwargs: Any) -> int:
    return _capped(20 + len(rows))


@on_gpu(_judge_s)
def judge(slot: int, rows: list[dict[str, Any]], excluded: list[str],
          threshold: float) -> list[dict[str, Any]]:
    """One evaluation batch: rows as `{"position", "row": Row fields}`, results as dicts."""
    from guard.core.datasets import Row
    from guard.eval.runner import judge as judge_batch

    batch = [(r["position"], Row(**r["row"])) for r in rows]
    return [asdict(result) for result in judge_batch(batch, models(slot).guards, excluded,
                                                     threshold)]


def _prompts_s(slot: int, texts: list[str], *args: Any, **kwargs: Any) -> int:
    return _capped(20 + len(texts))


@on_gpu(_prompts_s)
def score_prompts(slot: int, texts: list[str]) -> list[dict[str, Any]]:
    """Prompt Guard alone (the default choice) on each text: its windows and their maximum."""
    prompt_guard = models(slot).guards.prompt_guard
    if prompt_guard is None:
        raise ModelLoadError("Prompt Guard is not loaded on this server; see the banner on its "
                             "page.")
    return [score.to_json() for score in prompt_guard.score_many(texts)]


def _llama_guard(slot: int) -> Any:
    guard = models(slot).guards.llama_guard
    if guard is None:
        raise ModelLoadError("Llama Guard is not loaded on this server; see the banner on its "
                             "page.")
    return guard
