"""The one way from every client API (chat, text, Messages, Responses) to LiteLLM's router.

:meth:`Gateway.call` sends a chat or text completion to a model group through
``llm_router.acompletion`` / ``atext_completion`` with LiteLLM's own retries and fallbacks off,
and retries here instead, so that one client request makes at most ``1 + num_retries`` upstream
attempts in every failure mode (LiteLLM's layers stacked to 7-11), each on a chute that has not
failed it yet (when none is left, the request fails). The gateway owns every attempt through one
:class:`~chutes_lb.routing.attempts.UpstreamCall`: the routing core chooses the chute *before*
LiteLLM is called, and LiteLLM is asked to send to exactly that deployment (``model`` = its
deployment id: LiteLLM's router then skips its cooldown filter and its routing callbacks), so no
routing data travels through LiteLLM's metadata and nothing has to be read back from it. Each
attempt is closed here, once, with the one classifier's outcome
(:func:`chutes_lb.routing.retry.classify`). A retry also needs the :class:`~chutes_lb.routing.retry.RetryBudget`.
After the group's chutes have all failed, the next attempt goes to the group's fallbacks
(``router_settings.fallbacks``). A retry that served the request (its answer, or a stream's
first chunk) is refunded to the budget: only retries that failed again spend it.

A stream is retried too until its first chunk arrived: nothing has reached the client yet.
:class:`Streamed` then guards it: a client that goes away closes the upstream stream and the
attempt (``cancelled``); an error mid-way closes it with the error's outcome and re-raises for
the API layer to turn into its own error event.

A request that fails for good raises :class:`UpstreamFailure`: the status a client gets
(429, 502, 503, 504, or the upstream's own 4xx) and a message naming each attempt's chute and
what failed (``HTTP 503``, ``connect error``, ``timeout``), never a traceback; keys are redacted.
Each failed attempt is one log line.
"""
from __future__ import annotations

import ast
import asyncio
import fnmatch
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Protocol

from chutes_lb.fleet import Fleet
from chutes_lb.redact import Redactor
from chutes_lb.proxy.needs import needs_of
from chutes_lb.proxy.session import session_key
from chutes_lb.proxy.slotwait import SlotWait
from chutes_lb.routing.core import RoutingCore
from chutes_lb.routing.attempts import UpstreamCall, usage_of
from chutes_lb.routing.capability import NoChuteFits
from chutes_lb.routing.retry import Failure, RetryBudget, classify, final_status

__all__ = ["Gateway", "Sender", "LiteLLMSender", "CallResult", "Streamed", "UpstreamFailure"]

log = logging.getLogger("chutes_lb.proxy")


class UpstreamFailure(Exception):
    """A request that failed for good, with the status and message the client gets."""

    def __init__(self, status: int, message: str, failures: list[Failure], retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.failures, self.retry_after = status, message, failures, retry_after

    @property
    def kind(self) -> str:
        """``rate_limited`` (every attempt 429), else ``upstream_error``."""
        return "rate_limited" if self.status == 429 else "upstream_error"


@dataclass
class CallResult:
    response: Any  # ModelResponse / TextCompletionResponse, or None for a stream
    chute_id: str  # the chute that served it
    call_id: str
    attempts: int
    stream: "Streamed | None" = None


@dataclass
class Attempted:
    chute: str  # label
    failure: Failure
    detail: str = ""
    retry_after: float | None = None  # the upstream's Retry-After


class Streamed:
    """A stream whose first chunk already arrived; iterate it once. Other attributes are LiteLLM's
    stream wrapper's (the translation layers read ``logging_obj``, ``chunks``, ...). It closes its
    attempt exactly once: at the end (success, with the usage the stream reported), on an error
    mid-way (that error's outcome, then re-raised for the API layer to turn into its own error
    event) or when the client goes away (``cancelled``, and the upstream stream is closed)."""

    def __init__(self, call: UpstreamCall, wrapper: Any, first: Any, empty: bool, ttft: float | None) -> None:
        self._call, self.call_id, self._wrapper, self._first, self._empty = call, call.call_id, wrapper, first, empty
        self._ttft = ttft
        self._usage: Any = None
        self._gen: AsyncIterator[Any] | None = None
        self._ended = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_wrapper"], name)

    def __aiter__(self) -> "Streamed":
        return self

    async def __anext__(self) -> Any:
        if self._gen is None:
            self._gen = self._chunks()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]
        elif not self._ended:
            await self._abandon()

    def _saw(self, chunk: Any) -> Any:
        """Keep the latest usage the stream reported (the usage chunk, or LiteLLM's hidden
        usage on the last chunk when the client did not ask for it)."""
        usage = getattr(chunk, "usage", None)
        if usage is None:
            hidden = getattr(chunk, "_hidden_params", None)
            usage = hidden.get("usage") if isinstance(hidden, dict) else None
        if usage is not None:
            self._usage = usage
        return chunk

    async def _chunks(self) -> AsyncIterator[Any]:
        done = False
        try:
            if not self._empty:
                yield self._saw(self._first)
                async for chunk in self._wrapper:
                    yield self._saw(chunk)
            done = True
            self._ended = True
            self._call.close("success", ttft=self._ttft,
                             usage=usage_of({"usage": self._usage}) if self._usage is not None else None)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            done = True
            self._ended = True
            self._call.close(classify(exc).outcome)
            raise
        finally:
            if not done:  # the client went away: free the chute and the routing slot
                await self._abandon()

    async def _abandon(self) -> None:
        self._ended = True
        self._call.close("cancelled")
        try:
            if hasattr(self._wrapper, "aclose"):
                await asyncio.shield(self._wrapper.aclose())
        except Exception:  # closing a broken stream must not mask why it ended
            pass


class Sender(Protocol):
    """The narrow seam between the gateway and what sends one attempt (as httpx's transports):
    send the request ``params`` to exactly ``deployment`` (a deployment id, or a model group for
    the passthrough baseline) and return the response, or for ``stream`` an async iterator of
    chunks once the upstream answered; raise on failure (named by
    :func:`chutes_lb.routing.retry.classify`). :class:`LiteLLMSender` is the production one; the
    unit tests use a scripted one."""

    async def send(self, kind: str, deployment: str, params: dict[str, Any], *, stream: bool, call_id: str) -> Any: ...


class LiteLLMSender:
    """Sends through LiteLLM's router, to exactly the deployment given, with LiteLLM's own retries
    and fallbacks off (the gateway retries)."""

    def __init__(self, router: Callable[[], Any]) -> None:
        self.router = router  # returns LiteLLM's llm_router (set once the proxy started)

    async def send(self, kind: str, deployment: str, params: dict[str, Any], *, stream: bool, call_id: str) -> Any:
        router = self.router()
        kwargs = dict(params, model=deployment, litellm_call_id=call_id, num_retries=0, fallbacks=[])
        if stream:
            kwargs["stream"] = True
        return await (router.acompletion if kind == "chat" else router.atext_completion)(**kwargs)


@dataclass
class Gateway:
    sender: Sender
    core: RoutingCore
    fleet: Fleet
    budget: RetryBudget
    redactor: Redactor
    key_sources: tuple[str, ...] = ()  # ROUTING_AFFINITY_KEYS
    clock: Callable[[], float] = time.monotonic
    slot_wait: SlotWait | None = None  # ROUTING_WAIT_SECONDS: hold a request while every usable chute is full
    _deployments: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.slot_wait is not None:
            self.core.on_room = self.slot_wait.wake
        for ref in self.fleet.deployments:  # model group -> its deployment ids, in config order
            self._deployments[ref.model_group] = (*self._deployments.get(ref.model_group, ()), ref.deployment_id)

    def session(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> int | None:
        """The request's session key (never its text), None without one."""
        found = session_key(body, headers, self.key_sources) if self.key_sources else None
        return found[0] if found else None

    def window_of(self, group: str) -> int | None:
        """The largest known context window of the group's chutes (what ``/v1/models`` shows)."""
        return self.core.largest_window(self._deployments.get(group, ()))

    def group_of(self, model: str) -> str | None:
        """The model group a client's model name means, else None: a group, an alias
        (``router_settings.model_group_alias``), or the first alias pattern (``claude-*``) it
        matches, in config order."""
        if model in self.fleet.groups:
            return model
        exact = self.fleet.aliases.get(model)
        if exact is not None:
            return exact
        for pattern, group in self.fleet.aliases.items():
            if ("*" in pattern or "?" in pattern) and fnmatch.fnmatchcase(model, pattern):
                return group
        return None

    async def call(self, api: str, kind: str, group: str, params: dict[str, Any], stream: bool = False,
                   affinity_key: int | None = None) -> CallResult:
        """Send one client request (``params``: the upstream body without ``model``) to ``group``;
        ``affinity_key``: the request's session (routing/affinity.py), every attempt keeps it."""
        needs = needs_of(kind, params)
        call = UpstreamCall(self.core, str(uuid.uuid4()), api, affinity_key, needs)
        self.budget.request(self.clock())
        context_retried = False
        attempted: list[Attempted] = []
        groups = (group, *self.fleet.fallbacks.get(group, ()))
        max_attempts = 1 + self.fleet.num_retries
        retried_at: float | None = None  # when the budget granted the latest retry
        target: str | None = group
        while True:
            assert target is not None
            if self.core.strategy == "passthrough":  # a baseline: LiteLLM's own routing_strategy chooses
                deployment = target
            else:
                try:  # the core chooses among the chutes that can take it, before LiteLLM is called
                    candidates = self._deployments[target]
                    if self.slot_wait is not None:
                        def room() -> tuple[str, ...]:
                            return self.core.with_room(candidates, failed=call.tried, needs=call.needs)

                        if await self.slot_wait.until_room(lambda: not room()):
                            candidates = room() or candidates  # it waited for a slot: it takes one that freed
                    deployment = call.open(candidates, target)
                except NoChuteFits as exc:
                    if attempted:  # a context retry found no larger window: the chute's own 400 stands
                        raise self._failure(attempted, group) from None
                    raise UpstreamFailure(400, self.redactor.text(f"model group {group!r}: {exc.message}"), []) from None
            try:
                started = self.clock()
                response = await self.sender.send(kind, deployment, params, stream=stream, call_id=call.call_id)
                if stream:  # served once the first chunk arrived
                    first, empty = await self._first_chunk(response)
                    ttft = self.clock() - started
                if retried_at is not None:
                    self.budget.refund(retried_at)
                chute = call.tried[-1] if call.tried else self.core.chute_id(_model_id(response))
                if stream:
                    return CallResult(None, chute, call.call_id, len(attempted) + 1, Streamed(call, response, first, empty, ttft))
                call.close("success", usage=usage_of(response))
                return CallResult(response, chute, call.call_id, len(attempted) + 1)
            except asyncio.CancelledError:
                call.close("cancelled")
                raise
            except Exception as exc:
                failure = classify(exc)
                chute = call.close(failure.outcome)
                if chute is None and failure.upstream:  # passthrough: which chute failed is unknown here
                    failure = failure._replace(upstream=False, what=f"no upstream attempt known ({type(exc).__name__})")
                label = self.core.label(chute) if chute else "-"
                attempted.append(Attempted(label, failure, self._detail(exc), _retry_after_of(exc)))
                n = len(attempted)
                log.warning("upstream attempt failed: api %s, group %s, chute %s: %s (attempt %d of at most %d, call %s)",
                            api, target, label, failure.what, n, max_attempts, call.call_id[:8])
                window = self.core.capability(chute).max_model_len if chute else None
                if failure.context and not context_retried and window is not None and n < max_attempts:
                    # the estimate was short: once more, on a chute with a larger window (no budget:
                    # this amplifies no outage, and it says nothing of that chute's health)
                    context_retried = True
                    call.needs = needs._replace(min_window=window + 1)
                    self.core.metrics.retry(api, failure.outcome)
                    continue
                target = self._target(groups, set(call.tried))
                if not (failure.upstream and failure.retryable) or n >= max_attempts or target is None:
                    raise self._failure(attempted, group) from None
                now = self.clock()
                if not self.budget.try_retry(now):
                    self.core.metrics.retry_refused(api)
                    raise self._failure(attempted, group, budget=True) from None
                retried_at = now
                self.core.metrics.retry(api, failure.outcome)

    def _target(self, groups: tuple[str, ...], excluded: set[str]) -> str | None:
        """The first group that still has a chute this request has not failed on (a retry goes to
        another chute, never back to one that failed it), else None."""
        for g in groups:
            if any(c not in excluded for c in self.fleet.groups.get(g, ())):
                return g
        return None

    async def _first_chunk(self, wrapper: Any) -> tuple[Any, bool]:
        try:
            return await wrapper.__anext__(), False
        except StopAsyncIteration:
            return None, True

    def _detail(self, exc: Exception) -> str:
        """The upstream's own message, whole (up to :data:`MAX_DETAIL` characters, cut at a word)
        and redacted: never a traceback or a Python repr."""
        return self.redactor.text(upstream_message(exc))

    def _failure(self, attempted: list[Attempted], group: str, budget: bool = False) -> UpstreamFailure:
        failures = [a.failure for a in attempted]
        status = final_status(failures)
        parts = []
        for a in attempted:
            hint = f" ({a.detail})" if a.detail and a.failure.status and a.failure.outcome != "timeout" else ""
            parts.append(f"{a.chute}: {a.failure.what}{hint}" if a.failure.upstream else a.failure.what)
        upstream = [a for a in attempted if a.failure.upstream]
        if upstream:
            head = f"model group {group!r}: {len(upstream)} upstream attempt{'s' if len(upstream) > 1 else ''} failed"
        else:
            head = f"model group {group!r}: no chute could be tried"
        tail = (f"; retry budget exhausted (retries that fail again are held to {self.budget.percent:.0%} of the request rate)"
                if budget else "")
        message = self.redactor.text(f"{head}: {'; '.join(parts)}{tail}")
        retry_after = None
        if status in (429, 503):  # every 429 and 503 says when to come back
            told = [a.retry_after for a in attempted if a.retry_after is not None]
            if told:  # the upstream's own Retry-After
                retry_after = told[-1]
            elif not attempted[-1].failure.upstream:
                retry_after = self.fleet.cooldown_seconds
            else:  # the router's estimate of when a slot of this group frees
                retry_after = self.core.seconds_until_free(self.fleet.groups.get(group, ()))
        return UpstreamFailure(status, message, failures, retry_after)


MAX_DETAIL = 2000  # characters of an upstream message kept for the client (whole in practice)
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?(?:\w*Exception - )?")


def upstream_message(exc: BaseException) -> str:
    """What the upstream said, from a LiteLLM exception: the ``detail`` / ``message`` of its JSON
    (or Python-literal) body when it has one, else the text; LiteLLM's own prefixes removed."""
    text = str(exc).split("\n", 1)[0].strip()
    m = re.search(r"Error code: \d{3} - (.*)$", text)
    text = m.group(1).strip() if m else _LITELLM_PREFIX.sub("", text)
    if text[:1] in "{[":
        body: Any = None
        for parse in (json.loads, ast.literal_eval):
            try:
                body = parse(text)
                break
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
        found = _message_in(body)
        if found:
            text = found
    text = text.strip()
    if len(text) > MAX_DETAIL:
        cut = text.rfind(" ", 0, MAX_DETAIL)
        text = text[:cut if cut > MAX_DETAIL // 2 else MAX_DETAIL] + " [...]"
    return text


def _message_in(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                extra = {k: v for k, v in body.items() if k in ("quota_reset_timestamp",) and v}
                return value + "".join(f" ({k}: {v})" for k, v in extra.items())
            found = _message_in(value)
            if found:
                return found
    if isinstance(body, list) and body:
        return _message_in(body[0])
    return None


def _retry_after_of(exc: BaseException) -> float | None:
    """The upstream's ``Retry-After`` (seconds) when its answer had one."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or getattr(exc, "litellm_response_headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
        seconds = float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
    return seconds if seconds is not None and 0 <= seconds <= 3600 else None


def _model_id(response: Any) -> str:
    """The deployment LiteLLM chose (passthrough only: otherwise the gateway chose it)."""
    hidden = getattr(response, "_hidden_params", None)
    value = hidden.get("model_id") if isinstance(hidden, dict) else None
    return str(value) if value else ""
