"""The one serving path (proxy/serve.py) without LiteLLM: a fake gateway, the real adapters where
no translation is reached and small fake ones elsewhere, called as ASGI through our API routes."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping

import pytest

from chutes_lb.fleet import ChuteRef, Fleet
from chutes_lb.proxy.agent_api import MESSAGES, RESPONSES
from chutes_lb.proxy.gateway import CallResult, UpstreamFailure
from chutes_lb.proxy.openai_api import CHAT, sse_events
from chutes_lb.proxy.routes import ApiRoutes
from chutes_lb.proxy.serve import Adapter, Server, Translated
from chutes_lb.proxy.validation import validate_json_object
from chutes_lb.redact import Redactor
from chutes_lb.routing.metrics import RecordingMetrics
from chutes_lb.routing.retry import Failure
from tests.unit.asgi_client import Answer, call

CHUTE = ChuteRef("0f1e2d3c-0000-4000-8000-000000000001", "org/Model-A", "chutes-models")
FLEET = Fleet(deployments=(CHUTE,), chutes=(CHUTE,), groups={"chutes-models": (CHUTE.chute_id,)}, aliases={"claude-*": "chutes-models"})
SECRET = "sk-secret-master-key"


@dataclass
class Call:
    api: str
    kind: str
    group: str
    params: dict[str, Any]
    stream: bool
    affinity_key: int | None


@dataclass
class FakeGateway:
    """The gateway's interface (serve.GatewayLike): answers every call with ``outcome``."""

    outcome: CallResult | UpstreamFailure | None = None
    fleet: Fleet = FLEET
    redactor: Redactor = field(default_factory=lambda: Redactor([SECRET]))
    calls: list[Call] = field(default_factory=list)

    def group_of(self, model: str) -> str | None:
        return "chutes-models" if model in ("chutes-models", "claude-x") else None

    def session(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> int | None:
        return 42 if "x-session-id" in headers else None

    async def call(self, api: str, kind: str, group: str, params: dict[str, Any], stream: bool = False,
                   affinity_key: int | None = None) -> CallResult:
        self.calls.append(Call(api, kind, group, params, stream, affinity_key))
        if isinstance(self.outcome, UpstreamFailure):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


class FakeStream:
    """A :class:`~chutes_lb.proxy.gateway.Streamed` stand-in: chunks, then maybe an error."""

    def __init__(self, chunks: list[Any], error: Exception | None = None) -> None:
        self.chunks, self.error, self.closed = list(chunks), error, False
        self.call_id = "call-0001"

    def __aiter__(self) -> "FakeStream":
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(0)
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


class Response:
    def model_dump(self) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "hi"}}]}


async def _echo_events(stream: Any, failed: Any) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield b"data: " + chunk + b"\n\n"


def _echo(body: dict[str, Any], group: str) -> Translated:
    return Translated({"messages": body.get("messages")}, answer=lambda r: {"echo": r}, events=_echo_events)


ECHO = Adapter("chat", "chat", "openai", validate_json_object, _echo)


def result(stream: Any = None) -> CallResult:
    return CallResult(None if stream is not None else Response(), CHUTE.chute_id, "call-0001", 2, stream)


def serve(gateway: FakeGateway, adapter: Adapter, body: bytes, headers: dict[str, str] | None = None,
          leave_after_chunks: int | None = None) -> tuple[Answer, RecordingMetrics]:
    metrics = RecordingMetrics()
    app = ApiRoutes(_no_app, {"/v1/x": adapter}, Server(gateway, metrics).serve, max_body_bytes=10_000)
    answer = asyncio.run(call(app, "POST", "/v1/x", body, headers, leave_after_chunks=leave_after_chunks))
    return answer, metrics


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the request left our routes")


def requests(metrics: RecordingMetrics) -> dict[tuple[Any, ...], int]:
    return {k: v for k, v in metrics.counts.items() if k[0] == "request"}


CHAT_BODY = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}'
MESSAGES_BODY = b'{"model": "%s", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'


def test_an_unknown_model_is_a_404_in_openai_shape_and_never_reaches_the_gateway() -> None:
    gateway = FakeGateway()
    answer, metrics = serve(gateway, CHAT, CHAT_BODY % b"gpt-nope")
    assert answer.status == 404 and gateway.calls == []
    err = answer.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("not_found_error", "model_not_found", "model")
    assert "chutes-models" in err["message"]
    assert requests(metrics) == {("request", "chat", "client_error"): 1}


def test_an_unknown_model_is_a_404_in_anthropic_shape_on_messages() -> None:
    answer, metrics = serve(FakeGateway(), MESSAGES, MESSAGES_BODY % b"gpt-nope")
    assert answer.status == 404
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error" and set(body["error"]) == {"type", "message"}
    assert requests(metrics) == {("request", "messages", "client_error"): 1}


def test_a_chute_name_is_a_400_that_says_how_to_pin_it() -> None:
    answer, _ = serve(FakeGateway(), RESPONSES, b'{"model": "org/Model-A", "input": "hi"}')
    assert answer.status == 400
    assert answer.json()["error"]["type"] == "invalid_request_error" and answer.json()["error"]["code"] == "model_is_a_chute"


def _failure(status: int, retry_after: float | None = None) -> UpstreamFailure:
    return UpstreamFailure(status, f"model group 'chutes-models': HTTP {status}", [Failure("x", "rate_limited", True, True, status)],
                           retry_after)


@pytest.mark.parametrize("adapter,status,retry_after,kind,code,outcome", [
    (CHAT, 429, 10.0, "rate_limit_error", "rate_limited", "rate_limited"),
    (CHAT, 502, None, "upstream_error", "bad_gateway", "upstream_error"),
    (CHAT, 504, None, "upstream_error", "gateway_timeout", "upstream_error"),
    (CHAT, 400, None, "invalid_request_error", "400", "client_error"),
    (MESSAGES, 503, 10.0, "overloaded_error", None, "upstream_error"),
    (MESSAGES, 502, None, "api_error", None, "upstream_error"),
    (MESSAGES, 429, None, "rate_limit_error", None, "rate_limited"),
    (MESSAGES, 422, None, "invalid_request_error", None, "client_error"),
])
def test_an_upstream_failure_is_the_apis_error_with_its_status_and_retry_after(adapter: Adapter, status: int, retry_after: float | None,
                                                                               kind: str, code: str | None, outcome: str,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import chutes_lb.proxy.agent_api as agent_api

    monkeypatch.setattr(agent_api, "messages_to_chat", lambda body, group: ({"messages": body["messages"]}, {}))
    adapter = Adapter(adapter.api, adapter.kind, adapter.shape, adapter.validate,
                      agent_api._messages if adapter is MESSAGES else adapter.translate)
    body = (MESSAGES_BODY if adapter.shape == "anthropic" else CHAT_BODY) % b"claude-x"
    answer, metrics = serve(FakeGateway(_failure(status, retry_after)), adapter, body)
    assert answer.status == status
    assert answer.headers.get("retry-after") == (str(int(retry_after)) if retry_after else None)
    if adapter.shape == "anthropic":
        assert answer.json() == {"type": "error", "error": {"type": kind, "message": f"model group 'chutes-models': HTTP {status}"}}
    else:
        assert (answer.json()["error"]["type"], answer.json()["error"]["code"]) == (kind, code)
    assert requests(metrics) == {("request", adapter.api, outcome): 1}


def test_an_answer_is_json_with_the_chute_headers_and_the_gateway_gets_the_session() -> None:
    gateway = FakeGateway(result())
    answer, metrics = serve(gateway, CHAT, b'{"model": "chutes-models", "messages": [{"role": "user", "content": "hi"}], '
                                           b'"seed": null, "temperature": 0.5, "metadata": {"a": 1}}',
                            headers={"x-session-id": "s1"})
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "hi"
    assert answer.headers["x-litellm-model-id"] == CHUTE.chute_id and answer.headers["x-chutes-lb-attempts"] == "2"
    assert answer.headers["content-length"] == str(len(answer.body))
    assert gateway.calls == [Call("chat", "chat", "chutes-models", {"messages": [{"role": "user", "content": "hi"}],
                                                                    "temperature": 0.5}, False, 42)]
    assert requests(metrics) == {("request", "chat", "ok"): 1}


def test_a_stream_is_pumped_as_events_and_counted_once() -> None:
    stream = FakeStream([b"one", b"two"])
    answer, metrics = serve(FakeGateway(result(stream)), ECHO, b'{"model": "chutes-models", "stream": true}')
    assert answer.status == 200 and answer.headers["content-type"] == "text/event-stream"
    assert answer.headers["x-litellm-call-id"] == "call-0001"
    assert answer.chunks == [b"data: one\n\n", b"data: two\n\n"]
    assert requests(metrics) == {("request", "chat", "ok"): 1}


def test_a_client_that_leaves_a_stream_closes_it_and_counts_cancelled() -> None:
    stream = FakeStream([b"%d" % i for i in range(50)])
    answer, metrics = serve(FakeGateway(result(stream)), ECHO, b'{"model": "chutes-models", "stream": true}', leave_after_chunks=1)
    assert len(answer.chunks) < 50 and stream.closed
    assert requests(metrics) == {("request", "chat", "cancelled"): 1}


def test_an_openai_stream_that_breaks_ends_with_an_error_event_naming_no_secret() -> None:
    stream = FakeStream([], error=RuntimeError(f"connection reset, key {SECRET}"))
    answer, metrics = serve(FakeGateway(result(stream)), Adapter("chat", "chat", "openai", validate_json_object,
                                                                  lambda b, g: Translated({}, events=sse_events)),
                            b'{"model": "chutes-models", "stream": true}')
    assert answer.status == 200 and len(answer.chunks) == 1
    assert answer.body.startswith(b"data: {") and b"stream_interrupted" in answer.body and SECRET.encode() not in answer.body
    assert requests(metrics) == {("request", "chat", "ok"): 1}


def test_a_bug_in_an_adapter_is_a_500_in_its_shape_counted_once() -> None:
    def broken(body: dict[str, Any], group: str) -> Translated:
        raise KeyError("oops")

    for shape, expected in (("openai", "server_error"), ("anthropic", "api_error")):
        answer, metrics = serve(FakeGateway(), Adapter("messages", "chat", shape, validate_json_object, broken), b'{"model": "claude-x"}')
        assert answer.status == 500
        body = answer.json()
        assert (body["error"]["type"]) == expected
        assert requests(metrics) == {("request", "messages", "upstream_error"): 1}


def test_a_local_answer_skips_the_gateway_and_an_uncounted_api_is_not_counted() -> None:
    async def local() -> dict[str, int]:
        return {"input_tokens": 3}

    gateway = FakeGateway()
    adapter = Adapter("count_tokens", "chat", "anthropic", validate_json_object, lambda b, g: Translated({}, local=local), counted=False)
    answer, metrics = serve(gateway, adapter, b'{"model": "claude-x"}')
    assert (answer.status, answer.json(), gateway.calls) == (200, {"input_tokens": 3}, [])
    assert requests(metrics) == {}
