"""What the toggles do: category sweeps, per-category scores, and turn / image attribution.

Each runs as one batched call to the engine rather than one call per variant. The number of
variants is checked against `limits.MAX_VARIANTS` before anything is tokenized, and the engine
cuts the batch into passes within its token budget (`limits.TOKEN_BUDGET`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from guard.core import limits
from guard.core.conversation import Conversation
from guard.core.errors import GuardError, TooLarge
from guard.core.prompts import ANSWER_PREFIX, CustomCategory, PromptPlan
from guard.core.verdict import DEFAULT_THRESHOLD, Verdict
from guard.engines.engine import Engine
from guard.engines.llama_guard import LlamaGuard


@dataclass(frozen=True)
class Variant:
    """One run of a sweep or an attribution, and whether it flips the reference verdict."""

    name: str
    excluded: tuple[str, ...]
    verdict: Verdict
    flips: bool


def sweep(guard: LlamaGuard, conversation: Conversation, excluded: Iterable[str] = (), *,
          only_one: bool = False, threshold: float = DEFAULT_THRESHOLD,
          custom: Sequence[CustomCategory] = ()) -> list[Variant]:
    """All enabled categories, then each one excluded in turn (and, optionally, each alone)."""
    base = tuple(excluded)
    enabled = guard.plan(conversation, base, custom).enabled_codes
    runs = 1 + len(enabled) * (2 if only_one else 1)
    if runs > limits.MAX_VARIANTS:
        raise TooLarge(
            f"This sweep needs {runs} runs (all categories, then each of the {len(enabled)} "
            f"enabled ones left out{' and alone' if only_one else ''}); at most "
            f"{limits.MAX_VARIANTS} run at once. Exclude some categories first"
            f"{', or sweep without each category alone' if only_one else ''}.")
    variants: list[tuple[str, tuple[str, ...]]] = [("all enabled", base)]
    variants += [(f"without {code}", (*base, code)) for code in enabled]
    if only_one:
        variants += [(f"only {code}", tuple(c for c in enabled if c != code) + base)
                     for code in enabled]
    verdicts = guard.classify_batch([conversation] * len(variants), threshold=threshold,
                                    custom=custom, excluded_per_item=[e for _, e in variants])
    reference = verdicts[0].unsafe
    return [Variant(name, ex, v, v.unsafe != reference)
            for (name, ex), v in zip(variants, verdicts, strict=True)]


@dataclass(frozen=True)
class CategoryScore:
    code: str
    name: str
    probability: float  # P(this code is the first one listed | the answer starts "unsafe")
    share: float  # probability renormalised over the enabled codes


class NoCategoryScores(GuardError):
    """The engine cannot give per-category scores: they read the logits of every code."""


def require_category_scores(guard: Engine) -> None:
    """Refuse per-category scores, with the reason, on an engine whose capabilities lack them
    (call it before spending a GPU call on them)."""
    if not guard.capabilities.category_scores:
        raise NoCategoryScores(
            f"Per-category scores read the model's logits for every category code, which only "
            f"the transformers engine gives; this Llama Guard runs on "
            f"{guard.describe().engine}. Sweeps and attribution work on any engine; for "
            f"scores, load Llama Guard with --engine transformers.")


def category_scores(guard: LlamaGuard, conversation: Conversation, excluded: Iterable[str] = (),
                    custom: Sequence[CustomCategory] = ()) -> list[CategoryScore]:
    """Teacher-force 'unsafe' and score every enabled code as the first listed one.

    The prompt runs once; its key/value cache is copied to all candidate codes, which then run
    together as one small batch. A code's probability includes the token that ends it (a comma
    or the end of the answer), so S1 is not confused with the start of S10. An engine without
    the capability (`Capabilities.category_scores`) raises NoCategoryScores.
    """
    require_category_scores(guard)
    prompt_plan = guard.plan(conversation, excluded, custom)
    tokenizer = guard.tokenizer
    inputs = guard.prepare([_unsafe_answer(prompt_plan)], list(conversation.images))
    codes = list(prompt_plan.categories)
    candidate_ids = [tokenizer.encode(c.code, add_special_tokens=False) for c in codes]
    enders = _enders(guard)
    width = max(len(ids) for ids in candidate_ids)
    batch = torch.full((len(codes), width), guard.pad_id, dtype=torch.long)
    for row, ids in enumerate(candidate_ids):
        batch[row, :len(ids)] = torch.tensor(ids)
    device = guard.model.device
    prompt_len = inputs["input_ids"].shape[1]
    # Each candidate row holds a copy of the prompt's cache: as many rows per pass as the
    # token budget allows (all of them for a short prompt).
    per_pass = max(1, limits.TOKEN_BUDGET // (prompt_len + width))
    parts = []
    with guard._lock, torch.inference_mode():
        first = guard.model(**inputs, use_cache=True)
        for start in range(0, len(codes), per_pass):
            rows = batch[start:start + per_pass]
            last = start + per_pass >= len(codes)
            # A pass extends the cache it is given; every pass but the last gets a copy.
            cache = first.past_key_values if last else copy.deepcopy(first.past_key_values)
            cache.batch_repeat_interleave(len(rows))
            # Right padding is harmless here: each row is read only up to its own length.
            mask = torch.ones((len(rows), prompt_len + width), dtype=torch.long, device=device)
            position_ids = torch.arange(prompt_len, prompt_len + width,
                                        device=device).expand(len(rows), -1)
            out = guard.model(input_ids=rows.to(device), attention_mask=mask,
                              past_key_values=cache, position_ids=position_ids, use_cache=True)
            parts.append(out.logits.float().log_softmax(-1))
            del cache, out
    first_logp = first.logits[0, -1].float().log_softmax(-1)
    rest_logp = torch.cat(parts)
    log_probs = []
    for row, ids in enumerate(candidate_ids):
        total = first_logp[ids[0]].item()
        for i in range(1, len(ids)):
            total += rest_logp[row, i - 1, ids[i]].item()
        total += torch.logsumexp(rest_logp[row, len(ids) - 1, enders], dim=0).item()
        log_probs.append(total)
    probs = torch.tensor(log_probs).exp()
    shares = probs / probs.sum() if probs.sum() > 0 else probs
    return sorted((CategoryScore(c.code, c.card_name, float(p), float(s))
                   for c, p, s in zip(codes, probs, shares, strict=True)),
                  key=lambda s: -s.probability)


def first_code_probability(guard: LlamaGuard, conversation: Conversation, code: str,
                           excluded: Iterable[str] = ()) -> float:
    """The plain way to score one code: a full forward over prompt, 'unsafe', code and ending.

    `category_scores` must agree with this; it exists as that reference and as the baseline of
    bench/bench_explore.py.
    """
    require_category_scores(guard)
    tokenizer = guard.tokenizer
    inputs = guard.prepare([_unsafe_answer(guard.plan(conversation, excluded))],
                           list(conversation.images))
    start = inputs["input_ids"].shape[1]
    code_ids = tokenizer.encode(code, add_special_tokens=False)
    inputs["input_ids"] = torch.cat(
        [inputs["input_ids"], torch.tensor([code_ids], device=guard.model.device)], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with guard._lock, torch.inference_mode():
        logp = guard.model(**inputs).logits[0].float().log_softmax(-1)
    total = sum(logp[start - 1 + i, token].item() for i, token in enumerate(code_ids))
    total += torch.logsumexp(logp[-1, _enders(guard)], dim=0).item()
    return math.exp(total)


def _unsafe_answer(prompt_plan: PromptPlan) -> PromptPlan:
    """The prompt followed by the start of an unsafe answer, as the family's model writes it."""
    return prompt_plan.followed_by(ANSWER_PREFIX[prompt_plan.family.value] + "unsafe\n")


def _enders(guard: LlamaGuard) -> list[int]:
    """Tokens that can end a code: a comma, or the end of the answer."""
    eos = guard.eos_ids if isinstance(guard.eos_ids, list) else [guard.eos_ids]
    return sorted({*guard.tokenizer.encode(",", add_special_tokens=False)[:1], *eos})


def attribution(guard: LlamaGuard, conversation: Conversation, excluded: Iterable[str] = (), *,
                threshold: float = DEFAULT_THRESHOLD,
                custom: Sequence[CustomCategory] = ()) -> list[Variant]:
    """The verdict at every prefix ending at each message, and with each image left out."""
    excluded = tuple(excluded)
    runs = len(conversation.turns) + len(conversation.images)
    if runs > limits.MAX_VARIANTS:
        raise TooLarge(
            f"Attribution needs {runs} runs (one per message, one per image); at most "
            f"{limits.MAX_VARIANTS} run at once. Attribute a shorter conversation: at most "
            f"{limits.MAX_VARIANTS} messages and images together.")
    variants: list[tuple[str, Conversation]] = [
        (f"up to message {n}", conversation.prefix(n)) for n in range(1, len(conversation.turns) + 1)]
    position = 0
    for t_index, turn in enumerate(conversation.turns):
        for i_index in range(len(turn.images)):
            position += 1
            kept = turn.images[:i_index] + turn.images[i_index + 1:]
            turns = list(conversation.turns)
            turns[t_index] = dataclasses.replace(turn, images=kept)
            variants.append((f"without image {position} (message {t_index + 1})",
                             Conversation(tuple(turns))))
    # The engine tokenizes the longest variant (the whole conversation) first, so an
    # over-long conversation is refused before its many prefixes are tokenized.
    verdicts = guard.classify_batch([c for _, c in variants], excluded, threshold=threshold,
                                    custom=custom)
    full = verdicts[len(conversation.turns) - 1].unsafe
    return [Variant(name, excluded, v, v.unsafe != full)
            for (name, _), v in zip(variants, verdicts, strict=True)]
