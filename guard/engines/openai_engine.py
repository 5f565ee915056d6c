"""Llama Guard behind an OpenAI-compatible server (vLLM, llama.cpp server, TGI), over httpx.

Text conversations go to `/v1/completions` as the project's own rendered prompt, so every
engine judges the same prompt. Conversations with images go to `/v1/chat/completions` with
image parts (base64 data URLs); there the server renders the prompt with the model's chat
template, and excluded categories travel as `chat_template_kwargs.excluded_category_keys`.

A server tokenizes a prompt string with special tokens parsed, so text in a message that spells
one (`<|eot|>`, `<|start_header_id|>`, ...) would become that control token. Such text is sent
escaped, on both endpoints: a WORD JOINER (U+2060, invisible) after its `<`, which no tokenizer
reads as part of a control token. The model reads the characters (and the joiner); the verdict
says `special_token_text`. Text without such strings is sent unchanged.

p_unsafe comes from the top logprobs at the decision position, where the model writes 'safe' or
'unsafe' (after its blank line; or ' safe' / ' unsafe' with a leading space): see
`p_unsafe_from_top_logprobs`, which adds up both spellings and bounds what the server's top-k
leaves out.

Requests in flight: up to `concurrency` (GUARD_LAB_OPENAI_CONCURRENCY, `--concurrency`), sent by
one I/O thread, in a window that a busy server shrinks and that grows back (AIMD). HTTP 429 and
503 mean "busy": they halve the window, their `Retry-After` holds every new request, and they are
retried up to `busy_retries` times; connection errors, timeouts and other 5xx answers are retried
`retries` times, with exponential backoff and jitter (`guard.engines.http_client`).
`classify_batch` renders every prompt first and hands all its requests over at once.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from guard.core.categories import Family, categories_for, guess_family
from guard.core.conversation import Conversation
from guard.core.errors import ContextTooLong, GuardError
from guard.core.prompts import CustomCategory, PromptPlan
from guard.core.verdict import (
    DEFAULT_THRESHOLD,
    SAFE_SPELLINGS,
    UNSAFE_SPELLINGS,
    Verdict,
    logsumexp,
    make_verdict,
)
from guard.engines.engine import Capabilities, EngineBase, ModelInfo
from guard.engines.http_client import (
    DEFAULT_IN_FLIGHT,
    MAX_IN_FLIGHT,
    GaveUp,
    Reply,
    Requests,
    TransportProblem,
    Window,
)

BOS = "<|begin_of_text|>"
MAX_NEW_TOKENS = 40
ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = ("GUARD_LAB_OPENAI_BASE_URL", "GUARD_LAB_OPENAI_MODEL",
                                        "GUARD_LAB_OPENAI_API_KEY")
# Every special token of the Llama 3 and Llama 4 vocabularies has this shape.
SPECIAL_TOKEN_TEXT = re.compile(r"<\|[A-Za-z0-9_]+\|>")
WORD_JOINER = "\u2060"


def escape_special_text(text: str) -> tuple[str, bool]:
    """`text` with every special-token spelling broken by a WORD JOINER after its '<', and
    whether it had one."""
    escaped, count = SPECIAL_TOKEN_TEXT.subn(lambda m: "<" + WORD_JOINER + m.group(0)[1:], text)
    return escaped, count > 0


class ServerError(GuardError):
    """Base class: the OpenAI-compatible server could not give a verdict."""


class ServerUnavailable(ServerError):
    """The server could not be reached, timed out or kept failing after retries."""


class BadServerResponse(ServerError):
    """The server answered, but not with what an OpenAI-compatible server returns."""


def _word_logprob(top: Mapping[str, float], spellings: Sequence[str]) -> float | None:
    listed = [top[s] for s in spellings if s in top]
    return logsumexp(listed) if listed else None


def p_unsafe_from_top_logprobs(top: Mapping[str, float]) -> float:
    """P(unsafe) / (P(safe) + P(unsafe)) from a position's top logprobs, each word's
    probability the sum over its spellings ('safe' and ' safe', 'unsafe' and ' unsafe').

    Both words listed: exactly the softmax of the model's logits over the listed spellings (the
    shared normaliser cancels). Only one word listed: the other's probability is at most the
    smallest listed one per spelling and at most the mass the list leaves over; we take that
    bound for it, which gives the value closest to 0.5 the response allows: never more
    confident than the server's data. Neither listed: nothing is known, and 0.5 is returned
    (unsafe at the default threshold).
    """
    safe = _word_logprob(top, SAFE_SPELLINGS)
    unsafe = _word_logprob(top, UNSAFE_SPELLINGS)
    if safe is not None and unsafe is not None:
        high = max(safe, unsafe)
        return math.exp(unsafe - high) / (math.exp(safe - high) + math.exp(unsafe - high))
    if safe is None and unsafe is None:
        return 0.5
    probs = [math.exp(v) for v in top.values()]
    missing = len(UNSAFE_SPELLINGS if unsafe is None else SAFE_SPELLINGS)
    bound = max(min(missing * min(probs), 1.0 - sum(probs)), 0.0)
    if unsafe is None:
        return bound / (math.exp(safe) + bound)
    return math.exp(unsafe) / (math.exp(unsafe) + bound)


def decision_index(tokens: Sequence[str]) -> int:
    """Where 'safe' or 'unsafe' was generated, in either spelling; else the first token that
    is not whitespace."""
    decision = {*SAFE_SPELLINGS, *UNSAFE_SPELLINGS}
    for i, token in enumerate(tokens):
        if token in decision:
            return i
    for i, token in enumerate(tokens):
        if token.strip():
            return i
    return 0


def normalise_base_url(url: str) -> str:
    """'http://host:8000' -> 'http://host:8000/v1'; a URL with a path is kept as given."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GuardError(f"The server URL {url!r} is not an http(s) URL. Set "
                         f"{ENV_BASE_URL}, e.g. http://127.0.0.1:8000/v1.")
    return url if parts.path else url + "/v1"


def image_data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIGuard(EngineBase):
    """A Llama Guard model served by an OpenAI-compatible server. Thread-safe.

    Requests go over kept-alive connections of an I/O thread (`http_client.Requests`); through
    httpx instead when a `transport` is given (tests record requests that way) or when a proxy
    variable (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) applies to the server, since httpx speaks to
    proxies.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 family: Family | str | None = None, timeout: float = 60.0, retries: int = 2,
                 busy_retries: int = 8, backoff: float = 0.5, top_logprobs: int = 5,
                 concurrency: int = DEFAULT_IN_FLIGHT, server_adds_bos: bool = True,
                 context_limit: int = 0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = normalise_base_url(base_url)
        if not 1 <= concurrency <= MAX_IN_FLIGHT:
            raise GuardError(f"The requests in flight (concurrency) must be 1 to {MAX_IN_FLIGHT}, "
                             f"got {concurrency}. Set GUARD_LAB_OPENAI_CONCURRENCY or "
                             "--concurrency within that.")
        self.name = model
        self.family = Family(family or guess_family(model))
        self.retries = retries
        self.backoff = backoff
        self.top_logprobs = top_logprobs
        self.concurrency = concurrency
        # vLLM and llama.cpp's server prepend <|begin_of_text|> to a completion prompt
        # themselves; sending ours too would give the model two.
        self.server_adds_bos = server_adds_bos
        self.context_limit = context_limit
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http: httpx.Client | None = None
        if transport is not None or _proxied(self.base_url):
            self._http = httpx.Client(
                headers=headers, transport=transport,
                limits=httpx.Limits(max_connections=MAX_IN_FLIGHT,
                                    max_keepalive_connections=concurrency),
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))
        self._requests = Requests(
            self.base_url, concurrency, timeout=timeout, connect_timeout=min(timeout, 5.0),
            retries=retries, busy_retries=busy_retries, backoff=backoff, headers=headers,
            send_blocking=self._send_httpx if self._http is not None else None)

    @property
    def window(self) -> Window:
        """The requests in flight now, and how many may be (shrunk while the server is busy)."""
        return self._requests.window

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **options: Any) -> OpenAIGuard:
        """Configured from GUARD_LAB_OPENAI_BASE_URL, _MODEL and _API_KEY (read by the caller)."""
        base_url, model = environ.get(ENV_BASE_URL), environ.get(ENV_MODEL)
        if not base_url or not model:
            raise GuardError(f"Set {ENV_BASE_URL} (e.g. http://127.0.0.1:8000/v1) and "
                             f"{ENV_MODEL} (e.g. meta-llama/Llama-Guard-4-12B) to use a server.")
        return cls(base_url, model, api_key=environ.get(ENV_API_KEY) or None, **options)

    def close(self) -> None:
        self._requests.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> OpenAIGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def served_models(self) -> list[str]:
        """The model ids the server lists at /v1/models."""
        data = self._answer(self._requests.submit("GET", "/models"), "/models")
        try:
            return [m["id"] for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise self._unexpected("/models", data) from exc

    def check(self) -> None:
        """Fail early, with the server's own list, when it does not serve our model."""
        served = self.served_models()
        if self.name not in served:
            raise BadServerResponse(
                f"The server at {self.base_url} serves {', '.join(served) or 'no model'}, not "
                f"{self.name}. Set GUARD_LAB_OPENAI_MODEL to one of those.")

    @property
    def capabilities(self) -> Capabilities:
        """Images with Llama Guard 4 (chat completions); requests in flight together; only the
        top logprobs of the answer, so no per-category scores; the server's weights as served."""
        return Capabilities(images=self.family is Family.LLAMA_GUARD_4, batching=True)

    def describe(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family.value, device=self.base_url,
                         dtype="remote", revision=None, context_limit=self.context_limit,
                         multimodal=self.capabilities.images, engine="openai",
                         capabilities=self.capabilities)

    def classify(self, conversation: Conversation, excluded: Iterable[str] = (), *,
                 threshold: float = DEFAULT_THRESHOLD,
                 custom: Sequence[CustomCategory] = ()) -> Verdict:
        """Judge the last message of `conversation` with one request."""
        prepared = self._prepare(conversation, excluded, threshold, custom)
        return self._verdict(replace(prepared, future=self._requests.submit(
            "POST", prepared.path, prepared.body)))

    def prompt_text(self, prompt_plan: PromptPlan) -> str:
        """The completion prompt sent for a plan: its text pieces escaped, its control tokens
        as they are, without the BOS when the server adds one itself."""
        pieces = list(prompt_plan.pieces)
        if self.server_adds_bos and pieces and pieces[0].special and pieces[0].text == BOS:
            pieces = pieces[1:]
        return "".join(p.text if p.special else escape_special_text(p.text)[0] for p in pieces)

    def classify_batch(self, conversations: Sequence[Conversation], excluded: Iterable[str] = (), *,
                       threshold: float = DEFAULT_THRESHOLD, custom: Sequence[CustomCategory] = (),
                       batch_size: int | None = None,
                       excluded_per_item: Sequence[Iterable[str]] | None = None,
                       ) -> list[Verdict]:
        """Judge many conversations, one request each: every prompt is rendered and handed over
        first, then the answers are read; up to `concurrency` requests are in flight across all
        callers (the window). `batch_size` changes nothing here."""
        excluded = tuple(excluded)
        items = [excluded_per_item[i] if excluded_per_item is not None else excluded
                 for i in range(len(conversations))]
        prepared = [self._prepare(c, e, threshold, custom)
                    for c, e in zip(conversations, items, strict=True)]
        futures = self._requests.submit_many([("POST", p.path, p.body) for p in prepared])
        wait(futures)  # one wake-up when all are answered, not one per answer
        return [self._verdict(replace(p, future=f)) for p, f in zip(prepared, futures, strict=True)]

    # --- the two endpoints -------------------------------------------------------------------

    def _prepare(self, conversation: Conversation, excluded: Iterable[str], threshold: float,
                 custom: Sequence[CustomCategory]) -> _Sent:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        prompt_plan = self.plan(conversation, excluded, custom)
        started = time.perf_counter()
        if conversation.images:
            path, body = "/chat/completions", self._chat_body(conversation, prompt_plan, custom)
        else:
            path, body = "/completions", {
                "model": self.name, "prompt": self.prompt_text(prompt_plan),
                "max_tokens": MAX_NEW_TOKENS, "temperature": 0, "logprobs": self.top_logprobs,
                "stream": False}
        return _Sent(prompt_plan, path, json.dumps(body).encode(), started, threshold,
                     len(conversation.images))

    def _verdict(self, sent: _Sent) -> Verdict:
        assert sent.future is not None
        data = self._answer(sent.future, sent.path)
        if sent.path == "/completions":
            text, tokens, top, prompt_tokens = self._read_completion(data)
        else:
            text, tokens, top, prompt_tokens = self._read_chat(data)
        special_text = any(SPECIAL_TOKEN_TEXT.search(t) for t in sent.plan.text_pieces)
        return make_verdict(
            text, p_unsafe_from_top_logprobs(top[decision_index(tokens)] if top else {}),
            sent.plan.categories, categories_for(self.family), threshold=sent.threshold,
            prompt_tokens=prompt_tokens, images=sent.images,
            seconds=time.perf_counter() - sent.started, model=self.name,
            family=self.family.value, special_token_text=special_text)

    def _read_completion(self, data: Any) -> tuple[str, list[str], list[dict[str, float]], int]:
        try:
            choice = data["choices"][0]
            text = choice["text"]
            logprobs = choice.get("logprobs") or {}
            tokens = list(logprobs.get("tokens") or [])
            top = [dict(t or {}) for t in logprobs.get("top_logprobs") or []]
            prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._unexpected("/completions", data) from exc
        return text, tokens, self._need_logprobs(tokens, top), prompt_tokens

    def _chat_body(self, conversation: Conversation, prompt_plan: PromptPlan,
                   custom: Sequence[CustomCategory]) -> dict[str, Any]:
        messages = [{"role": turn.role, "content": (
            [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in turn.images]
            + [{"type": "text", "text": escape_special_text(part)[0]}
               for part in turn.text_parts])} for turn in conversation.turns]
        template_args: dict[str, Any] = {"excluded_category_keys": list(prompt_plan.excluded)}
        if custom:
            # The official template takes the whole table when a `categories` mapping is given.
            template_args["categories"] = {
                c.code: c.prompt_name + "." + (f"\n{c.description}" if c.custom and c.description
                                               else "")
                for c in prompt_plan.categories}
        return {"model": self.name, "messages": messages, "max_tokens": MAX_NEW_TOKENS,
                "temperature": 0, "logprobs": True, "top_logprobs": self.top_logprobs,
                "chat_template_kwargs": template_args, "stream": False}

    def _read_chat(self, data: Any) -> tuple[str, list[str], list[dict[str, float]], int]:
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            content = (choice.get("logprobs") or {}).get("content") or []
            tokens = [entry["token"] for entry in content]
            top = []
            for entry in content:
                listed: dict[str, float] = {}
                for alt in entry.get("top_logprobs") or []:
                    listed[alt["token"]] = max(alt["logprob"], listed.get(alt["token"], -math.inf))
                top.append(listed)
            prompt_tokens = int((data.get("usage") or {}).get("prompt_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self._unexpected("/chat/completions", data) from exc
        return text, tokens, self._need_logprobs(tokens, top), prompt_tokens

    def _need_logprobs(self, tokens: list[str], top: list[dict[str, float]]) -> list[dict[str, float]]:
        if not tokens or len(top) != len(tokens):
            raise BadServerResponse(
                f"The server at {self.base_url} returned no usable logprobs, which p_unsafe needs. "
                "vLLM returns them by default; start llama.cpp's server with logits_all enabled.")
        return top

    # --- HTTP: retries and the window are http_client's -------------------------------------

    def _answer(self, future: Future, path: str) -> Any:
        try:
            reply = future.result()
        except GaveUp as exc:
            raise ServerUnavailable(
                f"Could not get an answer from the server at {self.base_url + path} after "
                f"{exc.tries} tries ({exc.problem}). Start the server (e.g. `vllm serve MODEL`), "
                f"fix {ENV_BASE_URL}, or lower GUARD_LAB_OPENAI_CONCURRENCY if it is "
                "overloaded.") from None
        return self._json(reply, path)

    def _send_httpx(self, method: str, path: str, payload: bytes | None) -> Reply:
        assert self._http is not None
        try:
            response = self._http.request(method, self.base_url + path, content=payload,
                                          headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise TransportProblem(f"{type(exc).__name__}: {exc}" if str(exc)
                                   else type(exc).__name__) from None
        return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                     response.content)

    def _json(self, response: Reply, path: str) -> Any:
        if response.status in (401, 403):
            raise BadServerResponse(
                f"The server at {self.base_url} refused the request (HTTP {response.status}): "
                f"set {ENV_API_KEY} to a key it accepts.")
        if response.status >= 400:
            message = response.text[:400]
            if "context" in message.lower() and ("length" in message.lower()
                                                 or "window" in message.lower()):
                raise ContextTooLong(f"The server says the prompt is too long: {message}. "
                                     "Shorten the conversation or serve a longer context.")
            raise BadServerResponse(
                f"The server at {self.base_url} rejected {path} (HTTP {response.status}): "
                f"{message}")
        try:
            return json.loads(response.body)
        except ValueError:
            raise self._unexpected(path, response.text) from None

    def _unexpected(self, path: str, data: Any) -> BadServerResponse:
        shown = data if isinstance(data, str) else repr(data)
        return BadServerResponse(
            f"The server at {self.base_url} answered {path} with something that is not an "
            f"OpenAI-compatible response: {shown[:200]!r}. Check that the URL points at an "
            "OpenAI-compatible server (vLLM, llama.cpp server, TGI).")


def _proxied(base_url: str) -> bool:
    """Whether a proxy variable of the environment applies to this server."""
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    return bool(proxies.get(parts.scheme)) and not urllib.request.proxy_bypass(parts.netloc)


@dataclass(frozen=True)
class _Sent:
    """A request, and what its verdict needs; `future` once it is handed over."""

    plan: PromptPlan
    path: str
    body: bytes
    started: float
    threshold: float
    images: int
    future: Future | None = None
