"""Prefix cache, context limit, rate-limit mode and chute records on a real simulator, with the openai SDK."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest
import yaml

from chutes_lb.simulator.launch import AdminError, SimulatorProcess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CACHE_ID = "44444444-4444-4444-8444-444444444444"
SPREAD_ID = "55555555-5555-4555-8555-555555555555"
TIME_SCALE = 0.2
# One instance, so a repeat lands where the first request left its prefix. A 20k-token miss costs
# (0.05 + 20,000 / 10,000) x 1.25 (1 of 4 slots busy) x 0.2 = ~0.51 s; a hit ~0.014 s.
FLEET = [
    {"chute_id": CACHE_ID, "name": "sim/cache", "instances": 1, "concurrency": 4, "ttft": {"median": 0.05, "sigma": 0},
     "tps": {"median": 1000, "sigma": 0}, "output_tokens": {"median": 5, "sigma": 0}, "prefill_rate": 10000,
     "cache_tokens": 60000, "cache_block_tokens": 64, "context_length": 100000},
    {"chute_id": SPREAD_ID, "name": "sim/spread", "instances": 3, "concurrency": 2, "ttft": {"median": 0.01, "sigma": 0},
     "tps": {"median": 1000, "sigma": 0}, "output_tokens": {"median": 3, "sigma": 0}},
]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(FLEET, time_scale=TIME_SCALE, filler_entries=0) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(sim):
    sim.reset()


@pytest.fixture
def client(sim) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=20)
    yield c
    c.close()


def _msgs(letter: str, chars: int) -> list[dict]:
    return [{"role": "user", "content": letter * chars}]


def _timed(client: openai.OpenAI, messages: list[dict], model: str = "sim/cache") -> tuple[float, int, int]:
    """(seconds to the first streamed chunk, prompt tokens, cached tokens from the final usage chunk)."""
    t0 = time.perf_counter()
    first = None
    usage = None
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, stream_options={"include_usage": True}):
        if first is None:
            first = time.perf_counter() - t0
        if chunk.usage:
            usage = chunk.usage
    assert first is not None and usage is not None
    return first, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens


def test_a_cache_hit_lowers_time_to_first_token_and_is_reported(client):
    long = _msgs("a", 80_000)  # 20,001 tokens: 312 full blocks of 64
    miss, prompt_tokens, cached0 = _timed(client, long)
    assert prompt_tokens == 20_001 and cached0 == 0
    hit, _, cached1 = _timed(client, long)
    assert cached1 == 312 * 64
    assert miss > 0.35 and hit < miss / 4, (miss, hit)
    # a follow-up turn that extends the prompt reuses the whole earlier prefix
    follow = long + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "b" * 4000}]
    plain = client.chat.completions.create(model="sim/cache", messages=follow)
    assert plain.usage.prompt_tokens_details.cached_tokens == 312 * 64
    assert plain.usage.prompt_tokens == (80_006 + len("assistant\x1fok\x1e") + len("user\x1f\x1e") + 4000) // 4
    # a different prompt of the same size misses
    _, _, cached2 = _timed(client, _msgs("z", 80_000))
    assert cached2 == 0


def test_lru_eviction_keeps_the_prefix_that_was_used_last(sim, client):
    a, b, c = _msgs("a", 80_000), _msgs("b", 80_000), _msgs("c", 120_000)  # 312 + 312 + 468 blocks > 937
    for m in (a, b, c):
        client.chat.completions.create(model="sim/cache", messages=m)
    st = sim.chute_state("sim/cache")
    assert st["instance_state"][0]["cached_tokens"] == 937 * 64  # full: 60,000 tokens // 64
    # the least recently used blocks were a's tail: a keeps its first 937 - 468 - 312 = 157 blocks
    r = client.chat.completions.create(model="sim/cache", messages=a)
    assert r.usage.prompt_tokens_details.cached_tokens == 157 * 64
    sim.set_chute("sim/cache", cache_tokens=0)  # an empty cache: everything misses
    r = client.chat.completions.create(model="sim/cache", messages=b)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert sim.chute_state("sim/cache")["instance_state"][0]["cached_tokens"] == 0


def test_short_prompts_report_zero_cached_tokens_and_legacy_completions_cache_too(client):
    r = client.chat.completions.create(model="sim/spread", messages=[{"role": "user", "content": "hi"}])
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    prompt = "p" * 40_000
    client.completions.create(model="sim/cache", prompt=prompt, max_tokens=2)
    again = client.completions.create(model="sim/cache", prompt=prompt, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens == (10_000 - 1) // 64 * 64


def test_requests_spread_over_instances_by_least_connections(sim):
    async def run() -> list[int]:
        async with openai.AsyncOpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=20) as ac:
            burst = asyncio.gather(*(ac.chat.completions.create(model="sim/spread", messages=[{"role": "user", "content": "x"}])
                                     for _ in range(6)))
            deadline = time.monotonic() + 10
            while sim.chute_state("sim/spread")["in_flight"] < 6 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            loads = [i["in_flight"] for i in sim.chute_state("sim/spread")["instance_state"]]
            sim.set_chute("sim/spread", hang=False)
            await burst
            return loads

    sim.set_chute("sim/spread", hang=True)  # admitted requests wait on their instance until released
    assert asyncio.run(run()) == [2, 2, 2]  # 6 requests, 3 instances of 2 slots: least connections fills them evenly


def test_context_limit_is_vllms_400(sim, client):
    for messages, max_tokens, expect in (
        (_msgs("a", 399_600), 100, "However, you requested 100001 tokens (99901 in the messages, 100 in the completion)"),
        (_msgs("a", 40), 100_000, "However, you requested 100011 tokens (11 in the messages, 100000 in the completion)"),
        (_msgs("a", 400_400), None, "However, you requested 100101 tokens in the messages"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="sim/cache", messages=messages, **({"max_tokens": max_tokens} if max_tokens else {}))
        body = err.value.response.json()
        assert err.value.status_code == 400 and body["object"] == "error" and body["type"] == "BadRequestError"
        assert body["code"] == 400 and body["param"] is None
        assert body["message"].startswith("This model's maximum context length is 100000 tokens. ") and expect in body["message"]
    ok = client.chat.completions.create(model="sim/cache", messages=_msgs("a", 399_500), max_tokens=100)
    assert ok.usage.prompt_tokens == 99_876
    models = {m.id: m for m in client.models.list().data}
    assert models["sim/cache"].model_extra["context_length"] == 100_000


def _spread_entry(sim) -> dict:
    sim.refresh_utilization()
    return next(e for e in json.loads(sim.utilization()[1]) if e["chute_id"] == SPREAD_ID)


def test_reject_share_shows_in_utilization(sim):
    before = _spread_entry(sim)
    sim.set_chute("sim/spread", reject_share=0.4)
    statuses = []
    with openai.OpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=10) as c:
        for _ in range(10):  # one at a time: the chute is never full, the 429s are the mode's
            try:
                c.chat.completions.create(model="sim/spread", messages=[{"role": "user", "content": "x"}])
                statuses.append(200)
            except openai.RateLimitError as exc:
                assert exc.response.json() == {"detail": "Infrastructure is at maximum capacity, try again later"}
                statuses.append(429)
    assert statuses.count(429) == 4
    entry = _spread_entry(sim)
    total = entry["total_requests_5m"] - before["total_requests_5m"]
    limited = entry["rate_limited_requests_5m"] - before["rate_limited_requests_5m"]
    assert (total, limited) == (10.0, 4.0)
    assert entry["rate_limit_ratio_5m"] == pytest.approx(entry["rate_limited_requests_5m"] / entry["total_requests_5m"], abs=1e-6)
    if before["total_requests_5m"] == 0:  # this test alone (-k): the ratio is the mode's share
        assert entry["rate_limit_ratio_5m"] == pytest.approx(0.4)
    assert entry["utilization_current"] < 0.5
    st = sim.chute_state("sim/spread")
    assert st["reject_share"] == 0.4 and st["rejected_429"] == 4


def test_chute_record_like_the_real_api(sim):
    rec = sim.chute_record("sim/spread")
    assert rec["chute_id"] == SPREAD_ID and rec["name"] == "sim/spread" and rec["concurrency"] == 2
    assert len(rec["instances"]) == 3 and rec["max_instances"] >= 3
    assert all(set(i) >= {"instance_id", "region", "active", "verified"} and i["active"] and i["verified"] for i in rec["instances"])
    assert len({i["instance_id"] for i in rec["instances"]}) == 3
    assert [i["instance_id"] for i in sim.chute_record(SPREAD_ID)["instances"]] == [i["instance_id"] for i in rec["instances"]]
    sim.set_chute(SPREAD_ID, concurrency=5, instances=1)
    rec2 = sim.chute_record(SPREAD_ID)
    assert rec2["concurrency"] == 5 and len(rec2["instances"]) == 1
    assert rec2["instances"][0]["instance_id"] == rec["instances"][0]["instance_id"]
    with pytest.raises(AdminError) as err:
        sim.chute_record("no/such-chute")
    assert err.value.status == 404 and "detail" in json.loads(err.value.body)
    status, _ = sim.utilization()
    assert status == 200  # /chutes/utilization is still the utilization list


def test_demo_fleet_serves_exactly_the_configured_chutes(tmp_path):
    config = yaml.safe_load((ROOT / "proxy/litellm-config.yaml").read_text())
    entries = config["model_list"]
    entries.pop()  # GLM-4.6 leaves the config: its override in fleet-demo.yaml is ignored
    new = {**entries[0], "litellm_params": {**entries[0]["litellm_params"], "model": "openai/my-org/Brand-New-Model"},
           "model_info": {"id": "99999999-9999-4999-8999-999999999999", "concurrency": 3}}
    entries.append(new)
    path = tmp_path / "litellm-config.yaml"
    path.write_text(yaml.safe_dump(config))
    with SimulatorProcess(ROOT / "simulator/fleet-demo.yaml", time_scale=0.01, litellm_config=path) as s:
        names = [c["name"] for c in s.state()["chutes"]]
        assert names == ["moonshotai/Kimi-K2.5-TEE", "deepseek-ai/DeepSeek-V3-0324", "Qwen/Qwen3-235B-A22B-Instruct-2507",
                         "my-org/Brand-New-Model"]
        kimi = s.chute_state("moonshotai/Kimi-K2.5-TEE")
        added = s.chute_state("my-org/Brand-New-Model")
        assert (kimi["instances"], kimi["context_length"]) == (3, 262144)  # the demo's override
        assert (added["instances"], added["concurrency"]) == (2, 3)  # defaults + the config's concurrency
        with openai.OpenAI(base_url=s.openai_base, api_key="k", max_retries=0, timeout=10) as c:
            assert c.chat.completions.create(model="my-org/Brand-New-Model", messages=[{"role": "user", "content": "x"}]).choices
            with pytest.raises(openai.NotFoundError):
                c.chat.completions.create(model="zai-org/GLM-4.6", messages=[{"role": "user", "content": "x"}])
        log = s.log_text()
    assert "zai-org/GLM-4.6" in log and "matches no chute" in log
