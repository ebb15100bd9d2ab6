"""Admin fault controls of the simulator, seen from a real OpenAI client."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Iterator

import httpx
import openai
import pytest

from chutes_lb.simulator.launch import AdminError, SimulatorProcess

from sim_fleets import FAST_ID, FLEET, TIME_SCALE

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "x"}]
STATE_FIELDS = {"chute_id", "name", "instances", "concurrency", "in_flight", "speed", "ttft_scale", "error_rate", "error_status",
                "error_kind", "hang", "cut_after_tokens", "reset_rate", "served", "received", "rejected_429", "reject_share", "prefill_rate", "cache_tokens",
                "context_length", "prompt_tokens", "cached_tokens", "instance_state"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(FLEET, time_scale=TIME_SCALE, filler_entries=0) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(sim):
    sim.reset()


@pytest.fixture
def client(sim) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=5)
    yield c
    c.close()


def test_state_contract(sim):
    st = sim.state()
    assert set(st) == {"chutes", "utilization", "aliases", "account"}
    assert [c["name"] for c in st["chutes"]] == ["sim/fast", "sim/slow", "sim/cold"]
    assert all(set(c) == STATE_FIELDS for c in st["chutes"])
    assert {"mode", "refresh_seconds", "version", "refreshed_at"} <= set(st["utilization"])
    assert st["utilization"]["mode"] == "normal" and st["utilization"]["version"] >= 1


def test_set_chute_by_name_or_id_and_validation(sim):
    new = sim.set_chute(FAST_ID, speed=2.5, error_status=503)
    assert set(new) == STATE_FIELDS and new["speed"] == 2.5 and new["error_status"] == 503
    assert sim.set_chute("sim/fast", cut_after_tokens=3)["cut_after_tokens"] == 3
    for bad in ({"instances": -1}, {"speed": 0}, {"error_rate": 2}, {"error_status": 302}, {"hang": "yes"}, {"nope": 1}):
        with pytest.raises(AdminError) as err:
            sim.set_chute("sim/fast", **bad)
        assert err.value.status == 400 and "error" in json.loads(err.value.body)
    with pytest.raises(AdminError) as err:
        sim.set_chute("no-such-chute", speed=1)
    assert err.value.status == 404
    with pytest.raises(AdminError) as err:
        sim.set_utilization(mode="sideways")
    assert err.value.status == 400


def test_error_rate_one_answers_error_status(sim, client):
    sim.set_chute("sim/fast", error_rate=1.0, error_status=502)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="sim/fast", messages=MSG)
        assert err.value.status_code == 502 and "detail" in err.value.response.json()
    sim.set_chute("sim/fast", error_status=500)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="sim/fast", messages=MSG)
    assert err.value.response.json() == {"detail": "No infrastructure available to serve request"}
    sim.set_chute("sim/fast", error_rate=0.0)
    assert client.chat.completions.create(model="sim/fast", messages=MSG).choices


def test_instances_zero_then_back(sim, client):
    sim.set_chute("sim/fast", instances=0)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="sim/fast", messages=MSG)
    assert err.value.status_code == 503
    sim.set_chute("sim/fast", instances=1, concurrency=1)
    assert client.chat.completions.create(model="sim/fast", messages=MSG).choices


def test_hang_until_client_gives_up_and_slot_is_freed(sim):
    sim.set_chute("sim/fast", hang=True)
    with openai.OpenAI(base_url=sim.openai_base, api_key="k", max_retries=0, timeout=0.5) as c:
        t0 = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="sim/fast", messages=MSG)
        assert 0.4 < time.perf_counter() - t0 < 3
    deadline = time.monotonic() + 3
    while sim.chute_state("sim/fast")["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.chute_state("sim/fast")["in_flight"] == 0


def test_cut_stream_has_no_done(sim, client):
    sim.set_chute("sim/fast", cut_after_tokens=3)
    seen: list[str] = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(model="sim/fast", messages=MSG, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert len(seen) == 3
    # raw view: the byte stream stops without a finish chunk or [DONE]
    req = urllib.request.Request(sim.openai_base + "/chat/completions", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": "sim/fast", "messages": MSG, "stream": True}).encode())
    data = b""
    with pytest.raises(Exception):
        with urllib.request.urlopen(req, timeout=5) as resp:
            while True:
                part = resp.read1(65536)
                if not part:
                    break
                data += part
    assert b"[DONE]" not in data and b'"finish_reason":"stop"' not in data


def test_cut_non_stream_resets_connection(sim, client):
    sim.set_chute("sim/fast", cut_after_tokens=3)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="sim/fast", messages=MSG)


def test_reset_rate_one_resets_before_any_response(sim, client):
    served = sim.chute_state("sim/fast")["served"]
    sim.set_chute("sim/fast", reset_rate=1.0)
    for stream in (False, True):
        with pytest.raises(openai.APIConnectionError):
            r = client.chat.completions.create(model="sim/fast", messages=MSG, stream=stream)
            list(r) if stream else None
    st = sim.chute_state("sim/fast")
    assert st["in_flight"] == 0 and st["served"] == served


def test_reset_restores_fleet(sim, client):
    sim.set_chute("sim/fast", instances=0, error_rate=1, speed=3)
    sim.set_utilization(mode="garbage", refresh_seconds=1)
    st = sim.reset()
    fast = next(c for c in st["chutes"] if c["name"] == "sim/fast")
    assert (fast["instances"], fast["error_rate"], fast["speed"]) == (2, 0.0, 1.0)
    assert st["utilization"]["mode"] == "normal" and st["utilization"]["refresh_seconds"] == 60
    assert client.chat.completions.create(model="sim/fast", messages=MSG).choices


def test_admin_token_required_when_set():
    with SimulatorProcess(FLEET, time_scale=TIME_SCALE, admin_token="s3cret-admin") as s:
        assert s.state()["chutes"]
        req = urllib.request.Request(s.base_url + "/admin/state")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401
        err.value.close()
        # OpenAI routes stay open to any key
        with openai.OpenAI(base_url=s.openai_base, api_key="any", max_retries=0) as c:
            assert c.chat.completions.create(model="sim/fast", messages=[{"role": "user", "content": "secret prompt"}]).choices
        log = s.log_text()
    assert "s3cret-admin" not in log and "secret prompt" not in log and "SIMULATOR" in log
