"""The edge middlewares (proxy/middleware.py), our routes' body handling (proxy/routes.py) and
what reaches LiteLLM (proxy/passthrough.py), each alone over a stub app, as ASGI calls."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from chutes_lb.proxy.asgi import send_json
from chutes_lb.proxy.middleware import AccessLog, Auth, Probes, Redaction, StartOnFirstCall
from chutes_lb.proxy.passthrough import JsonBodies, OpenAIErrors, PathAllowList
from chutes_lb.proxy.routes import ApiRoutes
from chutes_lb.proxy.serve import Adapter, Translated
from chutes_lb.proxy.validation import validate_json_object
from chutes_lb.redact import Redactor
from tests.unit.asgi_client import call

KEY = "sk-test-master-key-1"


class Stub:
    """The app behind a middleware: records what reached it and answers 200 {"ok": true} (or
    ``status``/``raw`` as given)."""

    def __init__(self, status: int = 200, raw: bytes | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status, self.raw, self.headers = status, raw, headers or []
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        if scope["type"] == "http":
            message = await receive()
            body = message.get("body", b"")
        self.seen.append((scope.get("path", scope["type"]), body))
        if scope["type"] != "http":
            return
        if self.raw is None:
            await send_json(send, self.status, {"ok": True}, self.headers)
        else:
            await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"text/plain"), *self.headers]})
            await send({"type": "http.response.body", "body": self.raw})


def run(app: Any, method: str, path: str, body: bytes | list[bytes] = b"", **kw: Any) -> Any:
    return asyncio.run(call(app, method, path, body, **kw))


def probes(ready: bool = True, draining: bool = False, public: bool = False) -> tuple[Probes, Stub]:
    stub = Stub()
    return Probes(stub, ready=lambda: ready, metrics=lambda: b"# metrics\n", master_key=KEY, draining=lambda: draining,
                  metrics_public=public), stub


def test_probes_answer_without_the_app() -> None:
    app, stub = probes(ready=False)
    assert (run(app, "GET", "/livez").json(), run(app, "GET", "/readyz").status) == ({"status": "alive"}, 503)
    app, stub = probes(ready=True)
    assert run(app, "GET", "/readyz").json() == {"status": "ready"} and stub.seen == []


def test_a_draining_worker_fails_its_readiness_probes_but_stays_alive() -> None:
    app, stub = probes(draining=True)
    for path in ("/readyz", "/health/liveliness", "/health/readiness"):
        answer = run(app, "GET", path)
        assert (answer.status, answer.json()) == (503, {"status": "draining"}), path
    assert run(app, "GET", "/livez").status == 200 and stub.seen == []


@pytest.mark.parametrize("client,headers,public,served", [
    ("127.0.0.1", {}, False, True), ("10.1.2.3", {}, False, False), ("10.1.2.3", {"authorization": f"Bearer {KEY}"}, False, True),
    ("10.1.2.3", {"authorization": "Bearer wrong"}, False, False), ("10.1.2.3", {}, True, True),
])
def test_metrics_go_to_loopback_the_key_or_everyone_when_public(client: str, headers: dict[str, str], public: bool, served: bool) -> None:
    app, stub = probes(public=public)
    answer = run(app, "GET", "/metrics", headers=headers, client=client)
    assert (answer.body == b"# metrics\n") is served and (stub.seen == [("/metrics", b"")]) is not served


def test_auth_refuses_in_the_routes_shape_and_lets_the_key_and_public_paths_through() -> None:
    stub = Stub()
    app = Auth(stub, KEY, shapes={"/v1/messages": "anthropic"})
    missing = run(app, "POST", "/v1/chat/completions")
    assert missing.status == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "authentication_error" and missing.json()["error"]["code"] == "invalid_api_key"
    wrong = run(app, "POST", "/v1/messages", headers={"x-api-key": "nope"})
    assert wrong.status == 401 and wrong.json() == {"type": "error", "error": {"type": "authentication_error", "message": "Invalid API key"}}
    assert run(app, "GET", "/metrics").status == 401  # /metrics is public only through Probes
    assert stub.seen == []
    for method, path, headers in (("POST", "/v1/messages", {"x-api-key": KEY}), ("GET", "/v1/models", {"authorization": KEY}),
                                  ("GET", "/livez", {}), ("GET", "/swagger/x.js", {}), ("OPTIONS", "/v1/chat/completions", {})):
        assert run(app, method, path, headers=headers).status == 200, path


def _adapter(shape: str) -> Adapter:
    return Adapter("chat", "chat", shape, validate_json_object, lambda b, g: Translated({}))


def routes(shape: str = "openai", timeout: float = 5.0) -> tuple[ApiRoutes, Stub, list[dict[str, Any]]]:
    served: list[dict[str, Any]] = []

    async def serve(adapter: Adapter, body: dict[str, Any], send: Any, receive: Any, headers: Any) -> None:
        served.append(body)
        await send_json(send, 200, {"served": True})

    stub = Stub()
    return ApiRoutes(stub, {"/v1/x": _adapter(shape)}, serve, max_body_bytes=100, body_timeout=timeout), stub, served


@pytest.mark.parametrize("shape", ["openai", "anthropic"])
def test_our_routes_refuse_in_their_shape_and_serve_a_checked_body(shape: str) -> None:
    app, stub, served = routes(shape)
    wrong_method = run(app, "GET", "/v1/x")
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "POST"
    too_large = run(app, "POST", "/v1/x", [b"{" + b" " * 60, b" " * 60 + b"}"])
    assert too_large.status == 413
    bad = run(app, "POST", "/v1/x", b"[1]")
    assert bad.status == 400
    if shape == "anthropic":
        assert too_large.json()["error"]["type"] == "request_too_large" and bad.json()["type"] == "error"
    else:
        assert too_large.json()["error"]["code"] == "request_too_large" and bad.json()["error"]["type"] == "invalid_request_error"
    assert run(app, "POST", "/v1/x", [b'{"model":', b' "m"}']).json() == {"served": True}
    assert served == [{"model": "m"}] and stub.seen == []
    assert run(app, "GET", "/v1/models").status == 200 and stub.seen == [("/v1/models", b"")]


def test_a_body_that_does_not_arrive_in_time_is_a_408() -> None:
    app, _, served = routes(timeout=0.05)

    async def trickle() -> Any:
        async def receive() -> dict[str, Any]:
            await asyncio.sleep(1)
            return {"type": "http.request", "body": b"", "more_body": True}

        out: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            out.append(message)

        await app({"type": "http", "method": "POST", "path": "/v1/x", "headers": []}, receive, send)
        return out

    out = asyncio.run(trickle())
    assert out[0]["status"] == 408 and orjson.loads(out[1]["body"])["error"]["code"] == "request_timeout"
    assert served == []


def test_paths_outside_the_allow_list_are_404_in_openai_shape() -> None:
    stub = Stub()
    app = PathAllowList(stub)
    answer = run(app, "GET", "/key/generate")
    assert answer.status == 404 and answer.json()["error"]["type"] == "not_found_error" and stub.seen == []
    assert run(app, "GET", "/v1/models").status == 200 and run(app, "GET", "/litellm-asset-prefix/a.css").status == 200


@pytest.mark.parametrize("status,raw,kind,message", [
    (404, b'{"detail": "Not Found"}', "not_found_error", "Not Found"),
    (500, b"Internal Server Error", "server_error", "Internal error in the proxy"),
    (503, b'{"error": "no deployments"}', "upstream_error", "no deployments"),
    (408, b"slow", "invalid_request_error", "slow"),
])
def test_litellm_error_bodies_become_openai_errors(status: int, raw: bytes, kind: str, message: str) -> None:
    answer = run(OpenAIErrors(Stub(status, raw)), "GET", "/v1/models")
    assert answer.status == status and answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == {"message": message, "type": kind, "param": None, "code": str(status)}
    assert answer.headers["content-length"] == str(len(answer.body))
    ok = run(OpenAIErrors(Stub(200, b"fine")), "GET", "/v1/models")
    assert ok.body == b"fine" and ok.headers["content-type"] == "text/plain"


def test_json_bodies_for_litellm_must_be_objects_and_bodiless_methods_lose_their_body() -> None:
    stub = Stub()
    app = JsonBodies(stub, max_body_bytes=100)
    bad = run(app, "POST", "/health", b"[1, 2]", headers={"content-type": "application/json"})
    assert bad.status == 400 and stub.seen == []
    assert run(app, "POST", "/health", [b'{"a"', b": 1}"]).status == 200 and stub.seen[-1] == ("/health", b'{"a": 1}')
    assert run(app, "POST", "/health", b"x" * 200).status == 413
    assert run(app, "POST", "/health", b"[1]", headers={"content-type": "text/plain"}).status == 200  # not JSON: not ours to check
    assert run(app, "GET", "/v1/models", [b"junk", b"more"]).status == 200 and stub.seen[-1] == ("/v1/models", b"")


def test_redaction_masks_a_secret_in_any_body_and_fixes_the_length() -> None:
    app = Redaction(Stub(401, b"Invalid token Bearer " + KEY.encode()), Redactor([KEY]))
    answer = run(app, "GET", "/health")
    assert KEY.encode() not in answer.body and b"****" in answer.body
    assert answer.headers["content-length"] == str(len(answer.body))


def test_the_access_log_names_method_path_status_and_chute(caplog: pytest.LogCaptureFixture) -> None:
    app = AccessLog(Stub(headers=[(b"x-litellm-model-id", b"c-uuid")]), chute_label=lambda chute: f"name-of-{chute}")
    with caplog.at_level(logging.INFO, logger="chutes_lb.access"):
        run(app, "GET", "/v1/models")
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("GET /v1/models 200 chute=name-of-c-uuid ")


def test_start_on_first_call_starts_once_lifespan_included() -> None:
    started: list[int] = []
    stub = Stub()
    app = StartOnFirstCall(stub, lambda: started.append(1))

    async def twice() -> None:
        await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
        await call(app, "GET", "/livez")

    asyncio.run(twice())
    assert started == [1] and [p for p, _ in stub.seen] == ["lifespan", "/livez"]
