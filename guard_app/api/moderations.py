"""POST /v1/moderations: OpenAI's moderation API over Llama Guard and Prompt Guard.

Any OpenAI client works unchanged (`OpenAI(base_url=APP + "v1").moderations.create(...)`):
`input` is a string, a list of strings (one result each) or a list of text and `image_url`
parts (data URLs, one result); a conversation goes in as `messages` (the chat format of
/moderate, images as data URLs), since OpenAI's input is single-turn. Extensions:
`excluded_categories` (codes or names) and `threshold`, or `policy` (a saved policy's name,
NAME@VERSION or a policy object; guard_app.policies), whose decision is then `flagged`, with
`policy`, `model_answer` and `decision` beside it. `model` is echoed back and chooses
nothing: the server judges with what it loaded.

Each result has OpenAI's fields, keyed by the loaded family's category names (`violent_crimes`,
..., `self-harm` as OpenAI spells it) and by their codes (`S1`, ...): `flagged` (p_unsafe >= threshold), `categories` (flagged
and named), `category_scores` (Llama Guard scores the decision, not each category: a named
category carries p_unsafe, the others 0), `category_applied_input_types`; and Guard Lab's
`p_unsafe`, `threshold`, `raw_output`, `judged_role`, `p_malicious` (Prompt Guard's highest
score over the user messages) and `malicious` (p_malicious >= 0.9).

Errors are OpenAI's JSON (`{"error": {"message", "type", "param", "code"}}`) with a one-line
message: 400 bad input, 401 missing or wrong key (when GUARD_LAB_API_KEY is set), 413 too
large, 429 the caller's per-visitor limit, 503 busy or no Llama Guard. The body is refused by
its size before it is parsed, and its images are decoded at most `decode_concurrency` requests
at a time. Each input takes a visitor's place like a page run does (guard_app.fair) and a place
in the wait, and runs in a worker thread through the GPU boundary (guard_app.gpu), at most
`concurrency` at once, so the event loop stays free; between two inputs of one request the model
slot is released, so another visitor's request waits for one input, not for the whole list.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from guard.adapters.messages import chat_conversation, input_conversations
from guard.core.categories import Family, categories_for
from guard.core.conversation import Conversation
from guard.core.errors import GuardError, ModelLoadError, TooLarge
from guard.engines.prompt_guard import FIREWALL_THRESHOLD
from guard.engines.service import Guards
from guard_app import gpu
from guard_app.access import model_id
from guard_app.api.logic import parse_threshold
from guard_app.fair import Busy, Share
from guard_app.guarded import UNEXPECTED

log = logging.getLogger("guard_lab")
ROUTE = "/v1/moderations"
FIELDS = ("input", "model", "messages", "excluded_categories", "threshold", "policy")
MAX_INPUTS = 32
# The longest text the model can take (about a million characters: 1-6 MB as JSON) and some
# photos as data URLs. Larger images go through the page or /moderate's file uploads.
MAX_BODY_BYTES = 20 * 2**20
# A refused body is still read (and dropped) up to this, so that the client, which sends it
# all before it reads the answer, gets the answer rather than a broken connection.
DRAIN_BYTES = 256 * 2**20


class Refused(Exception):
    """A request answered with an OpenAI-style error."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(" ".join(message.split()))
        self.status, self.kind, self.code, self.param = status, kind, code, param


# OpenAI's own wire name where a category is also one of OpenAI's: the SDK reads "self-harm"
# into `categories.self_harm`, and would drop a "self_harm" key (that field's alias differs).
OPENAI_SPELLING = {"self_harm": "self-harm"}


def category_key(name: str) -> str:
    """'Non-Violent Crimes' -> 'non_violent_crimes': a name the SDK shows as an attribute."""
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return OPENAI_SPELLING.get(key, key)


@dataclass(frozen=True)
class Moderation:
    """What one request asks for, checked."""

    conversations: list[Conversation]
    excluded: tuple[str, ...]
    threshold: float
    model: str | None
    policy: Any = None  # the request's `policy` (a name or an object); a Policy once resolved
    threshold_given: bool = False


def excluded_codes(value: Any, family: Family) -> tuple[str, ...]:
    """Codes ('S1') or names ('violent_crimes', 'Violent Crimes'), as a list or 'S1,S2'."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise Refused(400, "`excluded_categories` must be a list of codes or names, e.g. "
                      '["S6", "intellectual_property"].', param="excluded_categories")
    table = categories_for(family)
    by_name = {category_key(c.prompt_name): c.code for c in table}
    codes: list[str] = []
    for item in (i.strip() for i in items if i.strip()):
        code = by_name.get(category_key(item), item.upper())
        if code not in {c.code for c in table}:
            raise Refused(400, f"Unknown category '{item}' in `excluded_categories`. "
                          f"{Family(family).label} has {table[0].code} to {table[-1].code} "
                          f"({', '.join(category_key(c.prompt_name) for c in table)}).",
                          param="excluded_categories")
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def parse_request(payload: Any, *, family: Family, default_threshold: float,
                  max_images: int) -> Moderation:
    """The request body (parsed JSON) as a Moderation, or Refused / a GuardError."""
    if not isinstance(payload, dict):
        raise Refused(400, 'The body must be a JSON object, e.g. {"input": "text to check"}.')
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise Refused(400, f"Unknown field{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(map(repr, unknown))}. This endpoint reads "
                      f"{', '.join(FIELDS)}.", param=unknown[0])
    model = payload.get("model")
    if model is not None and not (isinstance(model, str) and len(model) <= 256):
        raise Refused(400, "`model` must be a string (it is echoed back).", param="model")
    given = payload.get("input") not in (None, "", [])
    if payload.get("messages") is not None:
        if given:
            raise Refused(400, "Send either `input` (one message) or `messages` (a "
                          "conversation), not both.", param="messages")
        conversations = [chat_conversation(payload["messages"], max_images=max_images)]
    elif payload.get("input") is None:
        raise Refused(400, 'No `input`. Send {"input": "text"}, a list of texts, a list of '
                      "text and image_url parts, or a conversation as `messages`.",
                      param="input")
    else:
        conversations = input_conversations(payload["input"], max_images=max_images,
                                            max_inputs=MAX_INPUTS)
    try:
        threshold = parse_threshold(payload.get("threshold"), default_threshold)
    except GuardError as exc:
        raise Refused(400, str(exc), param="threshold") from None
    return Moderation(conversations, excluded_codes(payload.get("excluded_categories"), family),
                      threshold, model, payload.get("policy"),
                      payload.get("threshold") is not None)


def moderation_result(result: dict[str, Any], family: Family, images: int) -> dict[str, Any]:
    """One OpenAI moderation result from the JSON of `guard.engines.service.moderate`."""
    named = {c["code"] for c in result.get("categories", ())}
    enabled = set(result.get("enabled_categories", ()))
    decision = result.get("decision")  # with a policy (guard_app.policies), its decision flags
    flagged = bool(decision["flagged"] if decision is not None else result["unsafe"])
    p_unsafe = float(result["p_unsafe"])
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    table = categories_for(family)
    for key, c in [(category_key(c.prompt_name), c) for c in table] + [(c.code, c) for c in table]:
        categories[key] = flagged and c.code in named
        scores[key] = p_unsafe if c.code in named else 0.0
        types = ["text", *(["image"] if images and not c.text_only else [])]
        applied[key] = types if c.code in enabled else []
    prompt_guard = result.get("prompt_guard")
    p_malicious = prompt_guard["max_p_malicious"] if prompt_guard else None
    return {"flagged": flagged, "categories": categories, "category_scores": scores,
            "category_applied_input_types": applied, "p_unsafe": p_unsafe,
            "threshold": result["threshold"], "raw_output": result["raw_output"],
            "judged_role": result["judged_role"], "p_malicious": p_malicious,
            "malicious": None if p_malicious is None else p_malicious >= FIREWALL_THRESHOLD,
            # Text that imitates the prompt (control tokens, the template's own markers): the
            # verdict may have been steered by the text it judged (guard.core.markers).
            "special_token_text": bool(result.get("special_token_text")),
            "prompt_marker_text": bool(result.get("prompt_marker_text")),
            **({"policy": result["policy"], "model_answer": result["model_answer"],
                "decision": decision} if decision is not None else {})}


class Body:
    """The request body read from ASGI's `receive` by hand: refused by its size before it is
    all in memory, and drained after a refusal (Starlette's stream cannot be read twice)."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.done = False

    async def read(self, limit: int) -> bytes:
        declared = self.request.headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > limit:
            raise Refused(413, _too_large(int(declared), limit), code="request_too_large")
        chunks, size = [], 0
        while not self.done:
            chunk = await self._chunk()
            size += len(chunk)
            if size > limit:  # the rest is not read: its size is not known
                raise Refused(413, _too_large(size, limit, at_least=True),
                              code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def drain(self, budget: int = DRAIN_BYTES) -> None:
        while not self.done and budget > 0:
            budget -= len(await self._chunk())

    async def _chunk(self) -> bytes:
        message = await self.request.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message.get("body", b"")


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    more = "at least " if at_least else ""
    return (f"The request is {more}{size / 2**20:.1f} MB; {ROUTE} takes at most "
            f"{limit / 2**20:g} MB (the longest text the model can read and a few images). "
            "Send less at once, or smaller images.")


class Moderations:
    """The route over one demo's models; `install_routes` adds it to Gradio's FastAPI app."""

    def __init__(self, guards: Guards, slot: int, share: Share, *, family: Family,
                 threshold: float, max_images: int, concurrency: int, queue_size: int,
                 api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                 decode_concurrency: int = 2, policies: Any = None) -> None:
        self.guards, self.slot, self.share = guards, slot, share
        self.policies = policies  # guard_app.policies.PolicyBook: `policy` and the default
        self.family, self.threshold, self.max_images = family, threshold, max_images
        self.queue_size, self.max_body_bytes = queue_size, max_body_bytes
        self.api_key = api_key or None
        self.model_name = model_id(guards.llama_guard.name) if guards.llama_guard else ""
        self._running = asyncio.Semaphore(concurrency)
        self._decoding = asyncio.Semaphore(decode_concurrency)
        self._waiting = 0

    def check_key(self, authorization: str | None) -> None:
        if self.api_key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.api_key.encode()):
            raise Refused(401, "Missing or wrong API key. Send the server's GUARD_LAB_API_KEY "
                          "as 'Authorization: Bearer KEY' (the OpenAI SDK's api_key).",
                          code="invalid_api_key")

    async def respond(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        body = Body(request)
        try:
            self.check_key(request.headers.get("authorization"))
            if self.guards.llama_guard is None:
                raise ModelLoadError(f"Llama Guard is not loaded on this server, so {ROUTE} "
                                     "cannot judge; the banner on its page says why.")
            with self.share.hold(request):  # reading and decoding count as the visitor's
                data = await body.read(self.max_body_bytes)
                if b"image_url" not in data:  # text only: checked before the wait
                    asked = await run_in_threadpool(self.parse, data)
                # Images are decoded inside the model slot, so decoded pictures never pile
                # up while waiting for it; a few at once even with a larger --concurrency.
                async with self._slot(), self._decoding:
                    if b"image_url" in data:
                        asked = await run_in_threadpool(self.parse, data)
                    results = await self._judge(asked, asked.conversations[:1])
            for conversation in asked.conversations[1:]:  # each input: a place, then the slot
                with self.share.hold(request):
                    async with self._slot():
                        results += await self._judge(asked, [conversation])
        except Exception as exc:  # every refusal becomes an OpenAI-style error below
            refused = _refusal(exc)
            await body.drain()
            return JSONResponse({"error": {"message": str(refused), "type": refused.kind,
                                           "param": refused.param, "code": refused.code}},
                                status_code=refused.status)
        return JSONResponse({"id": f"modr-{uuid.uuid4().hex}",
                             "model": asked.model or self.model_name, "results": results})

    def parse(self, data: bytes) -> Moderation:
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise Refused(400, f"The body is not valid JSON ({exc}). Send an object like "
                          '{"input": "text to check"}.') from None
        asked = parse_request(payload, family=self.family, default_threshold=self.threshold,
                              max_images=self.max_images)
        if self.policies is None:
            if asked.policy is not None:
                raise Refused(400, "This server enforces no policies; leave out `policy`.",
                              param="policy")
            return asked
        try:
            policy = self.policies.resolve(
                asked.policy, excluded=asked.excluded,
                threshold=asked.threshold if asked.threshold_given else None)
        except GuardError as exc:
            raise Refused(400, str(exc), param="policy") from None
        return replace(asked, policy=policy)

    async def run(self, asked: Moderation) -> list[dict[str, Any]]:
        """Every conversation of `asked` in one turn of the model slot."""
        async with self._slot():
            return await self._judge(asked, asked.conversations)

    async def _judge(self, asked: Moderation, conversations: Sequence[Conversation]
                     ) -> list[dict[str, Any]]:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.judge, conversations, asked.excluded,
                                       asked.threshold, asked.policy)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A place in the wait (or 503 busy), then one of the `concurrency` model slots."""
        if self._running.locked() and self._waiting >= self.queue_size:
            raise Refused(503, f"The server is busy: {self._waiting} requests are already "
                          "waiting (GUARD_LAB_QUEUE_SIZE). Try again in a minute.",
                          kind="server_error", code="busy")
        self._waiting += 1
        try:
            await self._running.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._running.release()

    def judge(self, conversations: Sequence[Conversation], excluded: Sequence[str],
              threshold: float, policy: Any = None) -> list[dict[str, Any]]:
        """Both guards on each conversation, one GPU call each (under `policy`, a
        guard.core.policy.Policy, when given: then `flagged` is its decision)."""
        if policy is not None:
            from guard_app import policies

            return [moderation_result(policies.moderate(self.slot, gpu.plain(c), policy),
                                      self.family, len(c.images)) for c in conversations]
        return [moderation_result(gpu.moderate(self.slot, gpu.plain(c), list(excluded),
                                               threshold), self.family, len(c.images))
                for c in conversations]

    def install_routes(self, app: Any) -> None:
        """Add POST ROUTE to the FastAPI `app` that Gradio serves (once per app)."""
        installed = getattr(app.state, "guard_lab_moderations", None) is not None
        app.state.guard_lab_moderations = self  # the route asks whoever installed it last
        if not installed:
            async def moderations(request: Any) -> Any:
                return await app.state.guard_lab_moderations.respond(request)

            app.add_route(ROUTE, moderations, methods=["POST"], include_in_schema=False,
                          name="guard_lab_moderations")


def _refusal(exc: Exception) -> Refused:
    """The OpenAI-style error for an exception, logged as one line (a traceback if a bug)."""
    if isinstance(exc, Refused):
        refused = exc
    elif isinstance(exc, Busy):
        refused = Refused(429, str(exc), kind="rate_limit_error", code="per_visitor_limit")
    elif isinstance(exc, ModelLoadError):
        refused = Refused(503, str(exc), kind="server_error", code="model_not_loaded")
    elif isinstance(exc, TooLarge):
        refused = Refused(413, str(exc), code="too_large")
    elif isinstance(exc, GuardError):
        refused = Refused(400, str(exc))
    else:
        log.exception("unexpected error in %s", ROUTE)
        return Refused(500, UNEXPECTED, kind="server_error")
    log.info("refused %s (%d): %s", ROUTE, refused.status, str(refused)[:300])
    return refused
