"""Property-based fuzzing (hypothesis) of the running proxy's public routes, and slow clients.

Properties, for any body, shape, type, header or path a client can send:
- never a 5xx (a 5xx from bad input is a bug: the client cannot fix it);
- every 4xx carries an OpenAI-style body ``{"error": {"message": <non-empty str>, "type": ...}}``;
- the proxy keeps serving well-formed requests afterwards.
Example counts are bounded so the module runs in about a minute once the proxy is up. The
simulator runs 20x faster than real time, so valid bodies that reach a chute cost little.
"""
from __future__ import annotations

import json
import socket
import string
import threading
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.proxy_stack import MASTER_KEY, Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
HEADER_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def stack(redis_service: Any) -> Iterator[Stack]:
    s = start_stack(redis_service.url, f"test-fuzz-{uuid.uuid4().hex[:8]}", time_scale=0.05,
                    proxy_env={"PROXY_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)})
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        yield c


def check(r: httpx.Response, what: Any) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            raise AssertionError((what, r.status_code, "not JSON", r.text[:300])) from None
        err = body.get("error") if isinstance(body, dict) else None
        assert isinstance(err, dict), (what, r.status_code, r.text[:300])
        assert isinstance(err.get("message"), str) and err["message"], (what, r.status_code, r.text[:300])
        assert "type" in err, (what, r.status_code, r.text[:300])
    assert MASTER_KEY not in r.text


# ------------------------------------------------------------------ strategies
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
roles = st.sampled_from(["user", "system", "assistant", "tool", "developer", "", "USER", "robot"]) | st.text(max_size=8)
contents = st.text(max_size=40) | st.none() | json_values | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]) | json_values}, optional={"text": json_values, "image_url": json_values}), max_size=2)
message = st.fixed_dictionaries({"role": roles | json_values}, optional={"content": contents, "name": json_values})
models = st.sampled_from(["chutes-models", "no-such-model", "", " ", "openai/test/big", "aaaaaaaa-0000-5000-8000-000000000001"]) | st.text(max_size=12) | json_values
# Any JSON type in any of these fields: the front middleware validates them or LiteLLM copes.
UNTYPED = {
    "stream": st.booleans() | json_values, "max_tokens": st.integers(-5, 300) | json_values, "n": st.integers(-1, 3) | json_values,
    "max_completion_tokens": st.integers(-5, 300) | json_values, "temperature": st.floats(-5, 5, allow_nan=False) | json_values,
    "top_p": st.floats(-1, 2, allow_nan=False) | json_values, "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=5) | json_values,
    "user": st.text(max_size=10) | json_values, "seed": st.integers() | json_values, "presence_penalty": st.floats(-3, 3, allow_nan=False) | json_values,
    "frequency_penalty": json_values, "logprobs": json_values, "top_logprobs": json_values, "logit_bias": json_values,
    "stream_options": st.just({"include_usage": True}) | json_values, "response_format": st.just({"type": "text"}) | json_values,
    "tools": st.just([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]) | json_values,
    "tool_choice": json_values, "functions": json_values, "metadata": json_values, "extra_body": json_values, "timeout": json_values,
    "api_base": json_values, "api_key": json_values, "base_url": json_values,
}
chat_bodies = st.fixed_dictionaries({"model": models, "messages": st.lists(message, max_size=3) | json_values}, optional=UNTYPED)
prompts = st.text(max_size=30) | st.lists(st.text(max_size=10) | st.integers(-1, 1000) | json_values, max_size=3) | st.lists(st.lists(st.integers(0, 1000), min_size=1, max_size=4), min_size=1, max_size=2)
text_bodies = st.fixed_dictionaries({"model": models, "prompt": prompts | scalars}, optional=UNTYPED)


# Anthropic Messages and OpenAI Responses (the coding agents' APIs)
a_models = st.sampled_from(["claude-opus-5-5", "chutes-models", "no-such-model", "", "aaaaaaaa-0000-5000-8000-000000000001"]) | json_values
a_blocks = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "x"]) | json_values},
                                          optional={"text": json_values, "id": json_values, "name": json_values, "input": json_values,
                                                    "tool_use_id": json_values, "content": json_values, "source": json_values}), max_size=3)
a_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", ""]) | json_values},
                                  optional={"content": st.text(max_size=30) | a_blocks | json_values})
A_UNTYPED = {"max_tokens": st.integers(-5, 40) | json_values, "system": st.text(max_size=20) | a_blocks | json_values,
             "stream": st.booleans() | json_values, "tools": st.just([{"name": "Read", "input_schema": {"type": "object"}}]) | json_values,
             "tool_choice": st.just({"type": "auto"}) | json_values, "stop_sequences": st.lists(st.text(max_size=4), max_size=2) | json_values,
             "thinking": json_values, "metadata": json_values, "temperature": json_values, "top_k": json_values, "api_base": json_values}
message_bodies = st.fixed_dictionaries({"model": a_models, "messages": st.lists(a_message, max_size=3) | json_values}, optional=A_UNTYPED)
SHELL_TOOL = {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}}
r_items = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"]) | json_values},
                                         optional={"role": roles | json_values, "content": contents, "call_id": json_values,
                                                   "name": json_values, "arguments": json_values, "output": json_values}), max_size=3)
R_UNTYPED = {"instructions": st.text(max_size=20) | json_values, "stream": st.booleans() | json_values,
             "max_output_tokens": st.integers(-5, 40) | json_values, "tools": st.just([SHELL_TOOL]) | json_values,
             "tool_choice": json_values, "previous_response_id": json_values, "store": json_values, "reasoning": json_values,
             "include": json_values, "text": json_values, "prompt_cache_key": json_values, "api_key": json_values}
response_bodies = st.fixed_dictionaries({"model": models, "input": st.text(max_size=30) | r_items | json_values}, optional=R_UNTYPED)


def check_anthropic(r: httpx.Response, what: Any) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body, dict) and body.get("type") == "error", (what, r.status_code, r.text[:300])
        assert isinstance(body["error"].get("type"), str) and body["error"].get("message"), (what, r.text[:300])
    assert MASTER_KEY not in r.text


def _small(body: dict[str, Any]) -> dict[str, Any]:
    """Valid-looking bodies reach a chute: keep their answers short."""
    if body.get("max_tokens") is None or (isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 20):
        body = {**body, "max_tokens": 8} if "max_tokens" not in body or isinstance(body.get("max_tokens"), int) else body
    return body


# ------------------------------------------------------------------ bodies
@FUZZ
@given(body=chat_bodies)
def test_chat_completions_any_body(client: httpx.Client, body: dict[str, Any]) -> None:
    body = _small(body)
    r = client.post("/v1/chat/completions", content=json.dumps(body), headers={**AUTH, "content-type": "application/json"})
    check(r, body)


@FUZZ
@given(body=text_bodies)
def test_completions_any_body(client: httpx.Client, body: dict[str, Any]) -> None:
    body = _small(body)
    r = client.post("/v1/completions", content=json.dumps(body), headers={**AUTH, "content-type": "application/json"})
    check(r, body)


@FUZZ
@given(body=message_bodies)
def test_messages_any_body(client: httpx.Client, body: dict[str, Any]) -> None:
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 20:
        body = {**body, "max_tokens": 8}
    r = client.post("/v1/messages", content=json.dumps(body), headers={**AUTH, "content-type": "application/json"})
    check_anthropic(r, body)


@FUZZ
@given(body=response_bodies)
def test_responses_any_body(client: httpx.Client, body: dict[str, Any]) -> None:
    if "max_output_tokens" not in body:
        body = {**body, "max_output_tokens": 8}
    r = client.post("/v1/responses", content=json.dumps(body), headers={**AUTH, "content-type": "application/json"})
    check(r, body)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | json_values.map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions", "/v1/responses"]),
       ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"]))
def test_completion_routes_any_bytes(client: httpx.Client, raw: bytes, path: str, ctype: str) -> None:
    headers = {**AUTH, **({"content-type": ctype} if ctype else {})}
    r = client.post(path, content=raw, headers=headers)
    check(r, (path, raw[:80]))


# ------------------------------------------------------------------ headers and auth
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)


@FUZZ
@given(scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Token ", "Bearer  "]), key=header_values,
       header=st.sampled_from(["authorization", "x-api-key", "api-key", "x-litellm-api-key"]),
       path=st.sampled_from(["/v1/chat/completions", "/v1/models", "/info", "/model/info", "/v1/completions", "/health"]))
def test_wrong_keys_are_a_clear_401(client: httpx.Client, scheme: str, key: str, header: str, path: str) -> None:
    value = ((scheme + key) if header == "authorization" else key).strip()  # h11 refuses surrounding blanks
    if value.strip() in (MASTER_KEY, f"Bearer {MASTER_KEY}") or key.strip() == MASTER_KEY:
        return
    method = "POST" if "completions" in path else "GET"
    r = client.request(method, path, headers={header: value}, json={"model": "chutes-models", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401, (header, value, path, r.status_code, r.text[:300])
    check(r, (header, value))
    assert r.json()["error"]["type"] == "authentication_error"


# ------------------------------------------------------------------ paths and methods
LITELLM_PATHS = ["/v1/models", "/models", "/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions",
                 "/v1/embeddings", "/embeddings", "/v1/images/generations", "/v1/audio/speech", "/v1/moderations", "/v1/files",
                 "/v1/batches", "/v1/responses", "/v1/messages", "/key/generate", "/key/info", "/user/new", "/team/new",
                 "/spend/logs", "/global/spend", "/model/new", "/model/info", "/v1/model/info", "/health", "/health/readiness",
                 "/health/liveliness", "/routes", "/config/update", "/cache/ping", "/v1/rerank", "/utils/token_counter",
                 "/v1/assistants", "/v1/threads", "/fine_tuning/jobs", "/info", "/metrics", "/livez", "/readyz", "/", "/openapi.json"]
path_text = st.text(alphabet=string.ascii_letters + string.digits + "/-_.%~", max_size=30)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(path=st.sampled_from(LITELLM_PATHS) | path_text.map(lambda p: "/" + p.lstrip("/")),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]), body=json_values)
def test_any_path_and_method_with_the_key(client: httpx.Client, path: str, method: str, body: Any) -> None:
    """No 5xx on any route, served or not; every 4xx has an OpenAI-style body."""
    if path == "/health":
        return  # LiteLLM's deep health check calls every chute (not fuzz material)
    r = client.request(method, path, headers={**AUTH, "content-type": "application/json"}, content=json.dumps(body), timeout=30)
    check(r, (method, path, body))


@pytest.mark.parametrize("method,path", [("GET", "/no-such-route"), ("POST", "/v1/models"), ("DELETE", "/v1/chat/completions"),
                                         ("POST", "/key/generate"), ("GET", "/spend/logs")])
def test_unknown_route_or_method_has_an_openai_error_body(client: httpx.Client, method: str, path: str) -> None:
    r = client.request(method, path, headers=AUTH)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    check(r, (method, path))


# ------------------------------------------------------------------ slow clients
def _slow_loris(port: int, stop: threading.Event, result: dict[str, Any]) -> None:
    """Send a request's headers one byte per second; record when (if) the server cuts us off."""
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
               "Content-Type: application/json\r\nContent-Length: 100\r\nX-Padding: " + "a" * 200).encode()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(0.2)
        for byte in request:
            if stop.is_set():
                break
            try:
                # look for an answer before sending more: a byte sent after the server closed
                # would draw a reset that can discard the answer we have not read yet
                data = sock.recv(4096)
                result["closed_after"] = time.monotonic() - t0
                result["answer"] = data[:200]  # b"" = closed without an answer
                return
            except socket.timeout:
                pass
            except OSError as exc:
                result["closed_after"] = time.monotonic() - t0
                result["answer"] = repr(exc).encode()
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError as exc:
                result["closed_after"] = time.monotonic() - t0
                result["answer"] = repr(exc).encode()
                return
            time.sleep(0.8)
    result["still_open_after"] = time.monotonic() - t0


@pytest.mark.timeout(180)
def test_slow_loris_clients_do_not_block_others(stack: Stack) -> None:
    """20 clients trickle headers byte by byte; normal clients are served meanwhile, and each slow
    client gets a 408 with an OpenAI-style body and is disconnected once its headers took longer
    than PROXY_HEADER_TIMEOUT_SECONDS (uvicorn alone has no such limit; our protocol class adds it).
    Bound: 40 s of trickling."""
    stop = threading.Event()
    results: list[dict[str, Any]] = [{} for _ in range(20)]
    threads = [threading.Thread(target=_slow_loris, args=(stack.proxy.port, stop, results[i]), daemon=True) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(3)
    served: list[float] = []
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=30) as c:
        for _ in range(10):
            t0 = time.monotonic()
            r = c.post("/v1/chat/completions", json={"model": "chutes-models", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
            assert r.status_code == 200, r.text
            served.append(time.monotonic() - t0)
            time.sleep(3)
    stop.set()
    for t in threads:
        t.join(10)
    cut = [r for r in results if "closed_after" in r]
    still = [r for r in results if "still_open_after" in r]
    print(f"normal requests: max {max(served):.2f}s; slow clients cut off: {len(cut)} {[round(r['closed_after'], 1) for r in cut][:5]}, "
          f"still open when we stopped: {len(still)} {[round(r['still_open_after'], 1) for r in still][:3]}")
    assert max(served) < 10, served
    assert not still and len(cut) == 20, (cut, still)
    for r in cut:
        assert r["answer"].startswith(b"HTTP/1.1 408"), r
        assert HEADER_TIMEOUT - 1 <= r["closed_after"] <= HEADER_TIMEOUT + 5, r


def test_header_timeout_spares_a_kept_alive_connection(stack: Stack) -> None:
    """The header timer runs only while a request's headers are arriving: one connection carrying
    requests for longer than PROXY_HEADER_TIMEOUT_SECONDS in all is never cut."""
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=1)) as c:
        t0 = time.monotonic()
        ports = set()
        while time.monotonic() - t0 < HEADER_TIMEOUT + 3:
            r = c.post("/v1/chat/completions", json={"model": "chutes-models", "messages": [{"role": "user", "content": "hi"}],
                                                     "max_tokens": 8}, extensions={"trace": lambda name, info: ports.add(name)
                                                                                   if name.startswith("connection.connect_tcp.complete") else None})
            assert r.status_code == 200, r.text
            time.sleep(1.5)  # under uvicorn's 5 s keep-alive
        assert len(ports) == 1, ports  # one TCP connection all along


def test_oversize_body_streamed_slowly_is_refused(stack: Stack) -> None:
    """A body larger than PROXY_MAX_BODY_BYTES is refused with 413 as soon as the limit is crossed,
    also when it arrives in many small chunks with no Content-Length."""
    def chunks() -> Iterator[bytes]:
        yield b'{"model":"chutes-models","messages":[{"role":"user","content":"'
        for _ in range(300):
            yield b"x" * 32768  # ~9.8 MB in 32 kB pieces
        yield b'"}]}'

    r = httpx.post(stack.url + "/v1/chat/completions", content=chunks(), headers={**AUTH, "content-type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "request_too_large"


# ------------------------------------------------------------------ regressions: 5xx the fuzzing found
# Each of these reached LiteLLM and came back as a 500 (some as a plain-text "Internal Server
# Error") before the front middleware validated them (commit a953d72): now a clear 4xx.
CHAT_MIN = {"model": "chutes-models", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
TEXT_MIN = {"model": "chutes-models", "prompt": "x", "max_tokens": 5}
KNOWN_500 = [
    ("/v1/chat/completions", {**CHAT_MIN, "extra_body": "0"}),
    ("/v1/chat/completions", {**CHAT_MIN, "tools": True}),
    ("/v1/chat/completions", {**CHAT_MIN, "functions": -1}),
    ("/v1/chat/completions", {**CHAT_MIN, "response_format": 0}),
    ("/v1/chat/completions", {**CHAT_MIN, "timeout": "abc"}),
    ("/v1/chat/completions", {**CHAT_MIN, "api_key": 0}),
    ("/v1/chat/completions", {**CHAT_MIN, "api_base": 0}),
    ("/v1/chat/completions", {**CHAT_MIN, "messages": [{"role": "user", "content": [{"type": "x"}]}]}),
    ("/v1/completions", {**TEXT_MIN, "prompt": []}),
    ("/v1/completions", {**TEXT_MIN, "prompt": ["a", 1]}),
    ("/v1/completions", {**TEXT_MIN, "metadata": "0"}),
    ("/v1/completions", {**TEXT_MIN, "tools": []}),
    ("GET /v1/models", None),  # a GET with the body "null": plain-text 500
    ("/v1/embeddings", None),  # LiteLLM routes we do not use are reachable; body null: plain-text 500
]


@pytest.mark.parametrize("path,body", KNOWN_500, ids=[f"{p.split('/')[-1]}-{'-'.join(sorted(set(b or {}) - {'model', 'max_tokens', 'messages', 'prompt'})) or 'body'}-{i}" for i, (p, b) in enumerate(KNOWN_500)])
def test_bad_input_found_by_fuzzing_is_a_4xx(client: httpx.Client, path: str, body: dict[str, Any] | None) -> None:
    if path.startswith("GET "):  # a body on a GET is ignored now: a normal answer
        r = client.request("GET", path[4:], content=b"null", headers={**AUTH, "content-type": "application/json"})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return
    elif body is None:
        r = client.post(path, content=b"null", headers={**AUTH, "content-type": "application/json"})
    else:
        r = client.post(path, json=body, headers=AUTH)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    check(r, body)
