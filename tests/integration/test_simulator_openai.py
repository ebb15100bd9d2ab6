"""The simulator's OpenAI surface, driven by the official openai SDK over real HTTP."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Iterator

import openai
import pytest

from chutes_lb.simulator.launch import SimulatorProcess

from sim_fleets import COLD_ID, FAST_ID, FLEET, SLOW_ID, TIME_SCALE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(FLEET, time_scale=TIME_SCALE, filler_entries=3) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(sim):
    sim.reset()


@pytest.fixture
def client(sim) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=sim.openai_base, api_key="cpk_test", max_retries=0, timeout=10)
    yield c
    c.close()


def test_plain_chat(client):
    raw = client.chat.completions.with_raw_response.create(model="sim/fast", messages=[{"role": "user", "content": "hi there"}])
    assert raw.headers["X-Sim-Chute-Id"] == FAST_ID and len(raw.headers["X-Chutes-InvocationID"]) == 36
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == "sim/fast" and len(r.choices) == 1
    assert r.choices[0].message.role == "assistant" and len(r.choices[0].message.content.split()) == 20
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 20 and r.usage.total_tokens == r.usage.prompt_tokens + 20


def test_chute_by_uuid_answers_with_its_name(client):
    r = client.chat.completions.create(model=FAST_ID, messages=[{"role": "user", "content": "x"}], max_tokens=3)
    assert r.model == "sim/fast" and r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_streamed_chat_with_usage(client):
    stream = client.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            stream_options={"include_usage": True}, max_tokens=5)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "sim/fast" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_stream_raw_ends_with_done(sim):
    req = urllib.request.Request(sim.openai_base + "/chat/completions", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "sim/fast", "messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": 2}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in resp.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert len(events) == 1 + 2 + 1 + 1 + 1  # role, 2 tokens, finish, usage, [DONE]


def test_legacy_completions_plain_and_streamed(client):
    r = client.completions.create(model="sim/fast", prompt="Once upon a time", max_tokens=4)
    assert r.object == "text_completion" and len(r.choices[0].text.split()) == 4 and r.usage.completion_tokens == 4
    chunks = list(client.completions.create(model="sim/fast", prompt=["a", "b"], max_tokens=4, stream=True))
    assert len("".join(c.choices[0].text for c in chunks if c.choices).split()) == 4
    assert chunks[-1].usage.completion_tokens == 4


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["sim/fast", "sim/slow", "sim/cold"]
    assert all(m.object == "model" for m in models.data)


def test_request_shapes(client):
    r = client.chat.completions.create(
        model="sim/fast", n=2, max_completion_tokens=6, stop=["\n"], temperature=0.3,
        messages=[{"role": "system", "content": "You are a coding agent. " * 500},
                  {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        tools=[{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
        tool_choice="auto", response_format={"type": "json_object"}, extra_body={"top_k": 5, "something_new": {"x": 1}})
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 2500


def _post(sim, path, raw: bytes):
    req = urllib.request.Request(sim.base_url + path, data=raw, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("path,raw,param", [
    ("/v1/chat/completions", b"{oops", None), ("/v1/chat/completions", b"[]", None),
    ("/v1/chat/completions", b'{"model":"sim/fast"}', "messages"),
    ("/v1/chat/completions", b'{"model":"sim/fast","messages":"hi"}', "messages"),
    ("/v1/chat/completions", b'{"model":"sim/fast","messages":[{"role":"user","content":"x"}],"stream":"yes"}', "stream"),
    ("/v1/completions", b'{"model":"sim/fast"}', "prompt"),
    ("/v1/completions", b'{"model":"sim/fast","prompt":{"a":1}}', "prompt"),
])
def test_bad_input_is_a_400_with_openai_error_body(sim, path, raw, param):
    status, body = _post(sim, path, raw)
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param


def test_unknown_model_404_and_cold_chute_503(client):
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "x"}])
    assert nf.value.status_code == 404
    assert nf.value.response.json() == {"detail": "model not found: no/such-model"}
    with pytest.raises(openai.InternalServerError) as cold:
        client.chat.completions.create(model="sim/cold", messages=[{"role": "user", "content": "x"}])
    assert cold.value.status_code == 503
    assert cold.value.response.json() == {"detail": f"No instances available (yet) for chute_id={COLD_ID}"}


def test_429_beyond_capacity_exact_counts(sim):
    async def run() -> list[int]:
        async with openai.AsyncOpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=10) as ac:
            async def one() -> int:
                try:
                    await ac.chat.completions.create(model="sim/slow", messages=[{"role": "user", "content": "x"}])
                    return 200
                except openai.RateLimitError as exc:
                    assert exc.response.json() == {"detail": "Infrastructure is at maximum capacity, try again later"}
                    return 429
            return await asyncio.gather(*(one() for _ in range(7)))

    statuses = asyncio.run(run())
    assert sorted(statuses) == [200] * 3 + [429] * 4
    st = sim.chute_state(SLOW_ID)
    assert (st["served"], st["rejected_429"], st["in_flight"]) == (3, 4, 0)


def test_load_slows_decoding(sim):
    """Processor sharing: 8 concurrent requests on a 8-slot chute take longer each than one alone."""
    import time

    sim.set_chute("sim/fast", speed=0.05)  # 5 tok/s idle -> 20 tokens ~ 0.4 s at time scale 0.1

    async def timed(n: int) -> float:
        async with openai.AsyncOpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=20) as ac:
            t0 = time.perf_counter()
            await asyncio.gather(*(ac.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "x"}]) for _ in range(n)))
            return time.perf_counter() - t0

    alone = asyncio.run(timed(1))
    crowded = asyncio.run(timed(8))
    # alone: factor 1 + 1/8; full: factor 2 -> expect ~1.78x
    assert crowded > alone * 1.4, (alone, crowded)
