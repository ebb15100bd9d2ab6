"""Chutes' own multi-chute routing on a real simulator: lists, aliases, :latency, failover on 429/503 only."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from sim_fleets import module_simulator

pytestmark = pytest.mark.integration
SLOW_ID = "66666666-6666-4666-8666-666666666666"
QUICK_ID = "77777777-7777-4777-8777-777777777777"
COLD_ID = "88888888-8888-4888-8888-888888888888"
TIME_SCALE = 0.1
FLEET = [
    {"chute_id": SLOW_ID, "name": "sim/a-slow", "instances": 1, "concurrency": 1, "ttft": {"median": 2.0, "sigma": 0},
     "tps": {"median": 1000, "sigma": 0}, "output_tokens": {"median": 3, "sigma": 0}},
    {"chute_id": QUICK_ID, "name": "sim/b-quick", "instances": 2, "concurrency": 2, "ttft": {"median": 0.1, "sigma": 0},
     "tps": {"median": 1000, "sigma": 0}, "output_tokens": {"median": 3, "sigma": 0}},
    {"chute_id": COLD_ID, "name": "sim/c-cold", "instances": 0, "concurrency": 2},
]
MSG = [{"role": "user", "content": "hello"}]


sim = module_simulator(FLEET, time_scale=TIME_SCALE, filler_entries=0)


def _chat(sim_http: httpx.Client, model: str, **extra) -> httpx.Response:
    return sim_http.post("/v1/chat/completions", json={"model": model, "messages": MSG, **extra})


def test_a_list_is_served_by_its_first_chute_with_a_free_slot(sim, sim_http):
    r = _chat(sim_http, "sim/a-slow,sim/b-quick")
    assert r.status_code == 200 and r.json()["model"] == "sim/a-slow"
    sim.set_chute("sim/a-slow", hang=True)  # the next request on A holds A's only slot
    holder = threading.Thread(target=lambda: _chat(sim_http, "sim/a-slow"), daemon=True)
    holder.start()
    deadline = time.monotonic() + 5
    while sim.chute_state("sim/a-slow")["in_flight"] < 1:
        assert time.monotonic() < deadline, "the holding request never reached A"
        time.sleep(0.02)
    before = sim.chute_state("sim/a-slow")["received"]
    r = _chat(sim_http, "sim/a-slow,sim/b-quick")
    assert r.status_code == 200 and r.json()["model"] == "sim/b-quick"
    # A had no free slot: the failover ranking put B first, so A was not even tried
    assert sim.chute_state("sim/a-slow")["received"] == before
    # A alone answers Chutes' capacity 429
    alone = _chat(sim_http, "sim/a-slow")
    assert alone.status_code == 429 and alone.json() == {"detail": "Infrastructure is at maximum capacity, try again later"}
    sim.set_chute("sim/a-slow", hang=False)
    holder.join(10)


def test_a_cold_chute_is_skipped_and_a_429_tries_the_next(sim, sim_http):
    r = _chat(sim_http, "sim/c-cold,sim/b-quick")
    assert r.status_code == 200 and r.json()["model"] == "sim/b-quick"
    assert _chat(sim_http, "sim/c-cold").status_code == 503
    r = _chat(sim_http, "sim/c-cold, sim/c-cold")  # only cold chutes: the first answers its 503
    assert r.status_code == 503 and r.json()["detail"] == f"No instances available (yet) for chute_id={COLD_ID}"
    sim.set_chute("sim/a-slow", reject_share=1.0)  # A has a free slot but answers 429: tried, then B
    before = sim.chute_state("sim/a-slow")["rejected_429"]  # counters survive a reset
    r = _chat(sim_http, f"{SLOW_ID},{QUICK_ID}", stream=True)
    assert r.status_code == 200
    assert all('"model":"sim/b-quick"' in line for line in r.text.splitlines() if line.startswith("data: {"))
    assert sim.chute_state("sim/a-slow")["rejected_429"] == before + 1


def test_other_statuses_are_returned_without_failover(sim, sim_http):
    sim.set_chute("sim/a-slow", error_rate=1.0, error_status=500)
    before = sim.chute_state("sim/b-quick")["received"]
    r = _chat(sim_http, "sim/a-slow,sim/b-quick")
    assert r.status_code == 500
    assert sim.chute_state("sim/b-quick")["received"] == before
    assert _chat(sim_http, "sim/nope,sim/nada").json() == {"detail": "model not found: sim/nope,sim/nada"}


def test_latency_and_throughput_rank_by_measured_averages(sim, sim_http):
    # before any measurement the list order holds
    assert _chat(sim_http, "sim/a-slow,sim/b-quick:latency").json()["model"] == "sim/a-slow"
    assert _chat(sim_http, "sim/b-quick").status_code == 200
    assert _chat(sim_http, "sim/a-slow,sim/b-quick:latency").json()["model"] == "sim/b-quick"  # 0.01 s vs 0.2 s to first token
    r = _chat(sim_http, "sim/a-slow,sim/b-quick:throughput")
    assert r.status_code == 200 and r.json()["model"] in ("sim/a-slow", "sim/b-quick")


def test_aliases_expand_to_their_chutes(sim, sim_http):
    r = sim_http.post("/model_aliases/", json={"alias": "my-group", "chute_ids": ["sim/c-cold", QUICK_ID, "sim/a-slow"]})
    assert r.status_code == 200 and r.json()["chute_ids"] == [COLD_ID, QUICK_ID, SLOW_ID]
    assert _chat(sim_http, "My-Group").json()["model"] == "sim/b-quick"
    assert _chat(sim_http, "sim/a-slow,my-group").json()["model"] == "sim/a-slow"
    assert sim_http.get("/model_aliases/").json() == [{"alias": "my-group", "chute_ids": [COLD_ID, QUICK_ID, SLOW_ID]}]
    assert sim_http.post("/model_aliases/", json={"alias": "x", "chute_ids": ["sim/none"]}).status_code == 404
    assert sim_http.delete("/model_aliases/my-group").status_code == 200
    assert _chat(sim_http, "my-group").status_code == 404
