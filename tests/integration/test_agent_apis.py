"""The coding agents' APIs on the real proxy (LiteLLM, 2 workers, our hook) over the simulator:
Anthropic Messages through the ``anthropic`` SDK, OpenAI Responses through the ``openai`` SDK,
malformed bodies, and the routing they share with chat (spread, failover, accounting)."""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Iterator

import anthropic
import httpx
import openai
import pytest

from chutes_lb.devstack import metric_value
from tests.integration.proxy_stack import FLEET, MASTER_KEY, NAMES, Stack, start_stack
from tests.integration.reliability_matrix import Result, Row

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BIG, MEDIUM, SMALL = (c["chute_id"] for c in FLEET)
READ = {"name": "Read", "description": "Read a file", "input_schema": {
    "type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}
SHELL = {"type": "function", "name": "shell", "description": "Run a command", "parameters": {
    "type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}}


@pytest.fixture(scope="module")
def stack(redis_service) -> Iterator[Stack]:
    s = start_stack(redis_service.url, f"test-agents-{uuid.uuid4().hex[:8]}", time_scale=0.2)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(autouse=True)
def clean_faults(stack: Stack) -> Iterator[None]:
    yield
    stack.sim.reset()


@pytest.fixture
def claude(stack: Stack) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=stack.url, api_key=MASTER_KEY, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
def oai(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=60) as c:
        yield c


# ------------------------------------------------------------------ Anthropic Messages
def test_messages_plain_and_streamed(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(model="claude-opus-5-5", max_tokens=40, system="be brief",
                                                   messages=[{"role": "user", "content": "Hello!"}])
    assert raw.headers["x-litellm-model-id"] in NAMES
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == "claude-opus-5-5"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens") and msg.usage.output_tokens > 0 and msg.usage.input_tokens > 0
    events = []
    with claude.messages.stream(model="claude-opus-5-5", max_tokens=30, messages=[{"role": "user", "content": "Count"}]) as s:
        for event in s:
            events.append(event.type)
        final = s.get_final_message()
    assert events[0] == "message_start" and "content_block_delta" in events and events[-1] == "message_stop"
    assert "message_delta" in events and final.content[0].text and final.usage.output_tokens > 0


def test_messages_tool_use_then_tool_result(claude: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": 'Read the notes. sim:call Read {"file_path": "/project/notes.txt"}'}
    first = claude.messages.create(model="claude-x", max_tokens=64, tools=[READ], messages=[ask])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "Read" and use.input == {"file_path": "/project/notes.txt"}
    second = claude.messages.create(model="claude-x", max_tokens=64, tools=[READ], messages=[
        ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "the word is PAPAYA-7"}]}])
    assert second.stop_reason == "end_turn" and "PAPAYA-7" in second.content[0].text
    # the same loop streamed: tool arguments arrive as input_json_delta
    deltas = []
    with claude.messages.stream(model="claude-x", max_tokens=64, tools=[READ], messages=[ask]) as s:
        for event in s:
            if event.type == "content_block_delta":
                deltas.append(event.delta.type)
        final = s.get_final_message()
    assert "input_json_delta" in deltas and final.stop_reason == "tool_use"
    assert next(b for b in final.content if b.type == "tool_use").input == {"file_path": "/project/notes.txt"}


def test_messages_accepts_what_claude_code_sends(claude: anthropic.Anthropic, stack: Stack) -> None:
    body = {"model": "claude-opus-5-5", "max_tokens": 32, "stream": False,
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "system", "content": "extra system text"},
                         {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
            "tools": [{**READ, "input_schema": {**READ["input_schema"], "$schema": "https://json-schema.org/draft/2020-12/schema"},
                       "defer_loading": False}, {"type": "web_search_20250305", "name": "web_search"}],
            "metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "s"})},
            "thinking": {"type": "adaptive"}, "context_management": {"edits": []}, "output_config": {"effort": "high"},
            "temperature": 1, "top_k": 40}
    r = httpx.post(stack.url + "/v1/messages?beta=true", json=body, timeout=60,
                   headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"})
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["type"] == "text"


def test_count_tokens(claude: anthropic.Anthropic) -> None:
    small = claude.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "hello world"}])
    big = claude.messages.count_tokens(model="claude-x", system="s", tools=[READ],
                                       messages=[{"role": "user", "content": "hello world " * 2000}])
    assert 0 < small.input_tokens < 20 and big.input_tokens > 4000


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}])
def test_messages_wrong_or_missing_key_is_an_anthropic_401(stack: Stack, headers: dict) -> None:
    r = httpx.post(stack.url + "/v1/messages", json={"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
                   headers=headers, timeout=30)
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error" and MASTER_KEY not in r.text
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=stack.url, api_key="wrong", max_retries=0).messages.create(
            model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("body,kind,status", [
    (b"{nope", "invalid_request_error", 400), (b"[]", "invalid_request_error", 400),
    (b'{"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}', "invalid_request_error", 400),  # no max_tokens
    (b'{"model": "claude-x", "max_tokens": 5, "messages": []}', "invalid_request_error", 400),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}', "invalid_request_error", 400),
    (b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "nope"}]}]}', "invalid_request_error", 400),
    (b'{"model": "claude-x", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}', "invalid_request_error", 400),
    (b'{"model": "claude-x", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "invalid_request_error", 400),
    (b'{"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}', "not_found_error", 404),
    (b'{"model": "claude-x", "max_tokens": 5, "api_base": "http://evil", "messages": [{"role": "user", "content": "x"}]}', "invalid_request_error", 400),
])
def test_malformed_messages_bodies_are_anthropic_4xx(stack: Stack, body: bytes, kind: str, status: int) -> None:
    r = httpx.post(stack.url + "/v1/messages", content=body, timeout=30,
                   headers={"x-api-key": MASTER_KEY, "content-type": "application/json"})
    assert r.status_code == status, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == kind and data["error"]["message"]


# ------------------------------------------------------------------ OpenAI Responses
def test_responses_plain_and_streamed(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="chutes-models", input="Hello!", max_output_tokens=32,
                                                 instructions="be brief", store=False)
    assert raw.headers["x-litellm-model-id"] in NAMES
    r = raw.parse()
    assert r.output_text and r.usage.output_tokens > 0 and r.model == "chutes-models"
    events = [e for e in oai.responses.create(model="chutes-models", input=[{"role": "user", "content": "Hi"}], stream=True)]
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds and kinds[-1] in ("response.completed", "response.incomplete")
    seq = [e.sequence_number for e in events]
    assert seq == list(range(len(seq)))


def test_responses_function_call_round_trip(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="chutes-models", tools=[SHELL], input='sim:call shell {"command": ["cat", "notes.txt"]}')
    call = next(i for i in first.output if i.type == "function_call")
    assert call.name == "shell" and json.loads(call.arguments) == {"command": ["cat", "notes.txt"]}
    second = oai.responses.create(model="chutes-models", tools=[SHELL], input=[
        {"role": "user", "content": 'sim:call shell {"command": ["cat", "notes.txt"]}'},
        {"type": "function_call", "call_id": call.call_id, "name": "shell", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "the word is MANGO-3"}])
    assert "MANGO-3" in second.output_text
    events = list(oai.responses.create(model="chutes-models", tools=[SHELL], stream=True,
                                       input='sim:call shell {"command": ["ls"]}'))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"


@pytest.mark.parametrize("body,status,code", [
    (b"{nope", 400, None), (b'{"model": "chutes-models"}', 400, None), (b'{"model": "chutes-models", "input": 5}', 400, None),
    (b'{"model": "chutes-models", "input": "x", "previous_response_id": "resp_1"}', 400, "unsupported_parameter"),
    (b'{"model": "chutes-models", "input": "x", "max_output_tokens": -1}', 400, None),
    (b'{"model": "chutes-models", "input": "x", "tools": [1]}', 400, None),
    (b'{"model": "nope", "input": "x"}', 404, "model_not_found"),
])
def test_malformed_responses_bodies_are_openai_4xx(stack: Stack, body: bytes, status: int, code: str | None) -> None:
    r = httpx.post(stack.url + "/v1/responses", content=body, timeout=30,
                   headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and (code is None or err["code"] == code)


# ------------------------------------------------------------------ routed like chat
def _burst_ids(stack: Stack, path: str, body: dict, n: int) -> list[tuple[int, str | None]]:
    import asyncio

    async def run() -> list[tuple[int, str | None]]:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=90) as client:
            async def one() -> tuple[int, str | None]:
                r = await client.post(path, json=body)
                return r.status_code, r.headers.get("x-litellm-model-id")
            return await asyncio.gather(*(one() for _ in range(n)))
    return asyncio.run(run())


MSG = {"model": "claude-x", "max_tokens": 30, "messages": [{"role": "user", "content": "hello"}]}
RESP = {"model": "chutes-models", "input": "hello", "max_output_tokens": 30}


@pytest.mark.parametrize("path,body,api", [("/v1/messages", MSG, "messages"), ("/v1/responses", RESP, "responses")])
def test_a_burst_spreads_over_the_chutes_like_chat(stack: Stack, path: str, body: dict, api: str) -> None:
    before = metric_value(stack.proxy.metrics_text(), "chutes_lb_routing_decisions_total", {"api": api})
    results = _burst_ids(stack, path, body, 16) + _burst_ids(stack, path, body, 16)
    assert all(s == 200 for s, _ in results), results
    shares = Counter(NAMES[c] for _, c in results)
    assert set(shares) <= set(NAMES.values()) and len(shares) >= 2, shares
    assert shares["test/big"] / 32 < 0.85 and shares["test/small"] <= 12, shares  # 28 slots: 16 / 8 / 4
    assert metric_value(stack.proxy.metrics_text(), "chutes_lb_routing_decisions_total", {"api": api}) - before >= 32


@pytest.mark.parametrize("path,body,api", [("/v1/messages", MSG, "messages"), ("/v1/responses", RESP, "responses")])
def test_a_chute_answering_429_costs_no_request(stack: Stack, path: str, body: dict, api: str) -> None:
    stack.sim.set_chute(BIG, error_rate=1.0, error_status=429)
    results = _burst_ids(stack, path, body, 8) + _burst_ids(stack, path, body, 8)
    assert all(s == 200 for s, _ in results), results
    assert all(c != BIG for _, c in results)
    text = stack.proxy.metrics_text()
    assert metric_value(text, "chutes_lb_upstream_requests_total", {"chute": "test/big", "outcome": "rate_limited", "api": api}) > 0
    row = Row(f"{api}: one chute 429 storm", f"tests/integration/test_agent_apis.py::test_a_chute_answering_429_costs_no_request[{api}]")
    row.add(Result("ok" if s == 200 else "failed_clear", s, c) for s, c in results)
    row.save()


def test_a_stream_cut_mid_way_ends_with_a_clean_error_event(stack: Stack) -> None:
    for chute in (BIG, MEDIUM, SMALL):
        stack.sim.set_chute(chute, cut_after_tokens=3)
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    t0 = time.monotonic()
    row = Row("messages + responses: every chute cuts its stream mid-way", "tests/integration/test_agent_apis.py::"
              "test_a_stream_cut_mid_way_ends_with_a_clean_error_event",
              note="Anthropic stream ends with event: error; Responses stream with response.failed; never a hang")
    for _ in range(3):
        t1 = time.monotonic()
        with httpx.stream("POST", stack.url + "/v1/messages", json={**MSG, "stream": True}, headers=headers, timeout=60) as r:
            text = r.read().decode()
        assert r.status_code == 200 and "event: error" in text and '"type":"error"' in text.replace(" ", ""), text[-500:]
        row.add([Result("failed_clear", 200, r.headers.get("x-litellm-model-id"), "event: error", time.monotonic() - t1)])
        t1 = time.monotonic()
        with httpx.stream("POST", stack.url + "/v1/responses", json={**RESP, "stream": True}, headers=headers, timeout=60) as r:
            text = r.read().decode()
        assert r.status_code == 200 and "event: response.failed" in text, text[-500:]
        row.add([Result("failed_clear", 200, r.headers.get("x-litellm-model-id"), "response.failed", time.monotonic() - t1)])
    row.save()
    assert time.monotonic() - t0 < 60
    time.sleep(1.0)
    for info in (httpx.get(stack.url + "/info", headers=headers, timeout=30).json() for _ in range(4)):
        assert all(d["in_flight_this_worker"] == 0 for d in info["deployments"]), info["deployments"]


def test_bad_input_on_both_routes_is_a_4xx_row(stack: Stack) -> None:
    """Every malformed body of the two tests above, sent again, counted as one matrix row."""
    bodies = [("/v1/messages", b) for b, _, _ in [
        (b"{nope", 0, 0), (b"[]", 0, 0), (b'{"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}', 0, 0),
        (b'{"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "nope"}]}]}', 0, 0),
        (b'{"model": "claude-x", "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}', 0, 0)]]
    bodies += [("/v1/responses", b) for b in (b"{nope", b'{"model": "chutes-models"}', b'{"model": "chutes-models", "input": 5}',
                                               b'{"model": "chutes-models", "input": "x", "previous_response_id": "r"}',
                                               b'{"model": "chutes-models", "input": "x", "tools": [1]}')]
    row = Row("messages + responses: bad input", "tests/integration/test_agent_apis.py::test_bad_input_on_both_routes_is_a_4xx_row",
              note="400/404 in each API's error shape, never a 5xx")
    for path, raw in bodies:
        r = httpx.post(stack.url + path, content=raw, timeout=30, headers={"x-api-key": MASTER_KEY, "content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, raw, r.status_code, r.text)
        row.add([Result("failed_clear", r.status_code, None, r.text[:120])])
    row.save()
