"""Instances inside a chute, routed as Chutes does: prefix keys only for plain-string contents.

The same 12 multi-turn conversations get far fewer cached prompt tokens on a multi-instance chute
when their contents are lists of parts (Chutes' instance choice falls back to fewest connections
and the KV cache is found by chance) than when they are plain strings (the prefix key memo sends
a conversation back to the instance that holds its prefix).
"""
from __future__ import annotations

import json

import httpx
import pytest

from chutes_lb.simulator.launch import SimulatorProcess

from sim_fleets import module_simulator

pytestmark = pytest.mark.integration
MULTI_ID = "99999999-9999-4999-8999-999999999999"
FLEET = [{"chute_id": MULTI_ID, "name": "sim/multi", "instances": 4, "concurrency": 8, "ttft": {"median": 0.05, "sigma": 0},
          "tps": {"median": 2000, "sigma": 0}, "output_tokens": {"median": 20, "sigma": 0}, "cache_tokens": 500_000}]
CONVERSATIONS, TURNS = 12, 5


sim = module_simulator(FLEET, time_scale=0.01, filler_entries=0, seed=7)


def _content(text: str, parts: bool):
    return [{"type": "text", "text": text}] if parts else text


def _run(sim: SimulatorProcess, parts: bool) -> tuple[int, int]:
    """(cached prompt tokens, prompt tokens) over every follow-up turn of the 12 conversations."""
    sim.reset()  # empty caches and key memo
    histories = [[{"role": "system", "content": _content(f"You are agent {i}. " * 160, parts)}]
                 for i in range(CONVERSATIONS)]
    cached = prompt = 0
    with httpx.Client(base_url=sim.base_url, timeout=20) as http:
        for turn in range(TURNS):
            for i, history in enumerate(histories):  # interleaved, as concurrent users are
                history.append({"role": "user", "content": _content(f"turn {turn} of conversation {i}: " + "details " * 100, parts)})
                r = http.post("/v1/chat/completions", json={"model": "sim/multi", "messages": history})
                assert r.status_code == 200, r.text
                body = r.json()
                history.append({"role": "assistant", "content": _content(body["choices"][0]["message"]["content"], parts)})
                if turn:
                    cached += body["usage"]["prompt_tokens_details"]["cached_tokens"]
                    prompt += body["usage"]["prompt_tokens"]
    return cached, prompt


def test_list_contents_lose_the_prefix_routing(sim):
    strings_cached, strings_prompt = _run(sim, parts=False)
    parts_cached, parts_prompt = _run(sim, parts=True)
    assert strings_prompt == parts_prompt  # the same conversations
    strings_ratio, parts_ratio = strings_cached / strings_prompt, parts_cached / parts_prompt
    # strings: back to the instance holding the prefix 95% of the time; parts: 1 in 4 by chance
    assert strings_ratio > 0.7, strings_ratio  # 0.82 with this seed
    assert parts_ratio < 0.55, parts_ratio  # 0.42 with this seed
    assert parts_cached < strings_cached * 0.7, (parts_cached, strings_cached)


def test_instance_counts_match_everywhere(sim):
    sim.reset()
    sim.set_chute("sim/multi", instances=3)
    sim.refresh_utilization()
    entry = next(e for e in json.loads(sim.utilization()[1]) if e["chute_id"] == MULTI_ID)
    state = sim.chute_state("sim/multi")
    record = sim.chute_record("sim/multi")
    assert entry["instance_count"] == entry["active_instance_count"] == len(state["instance_state"]) == len(record["instances"]) == 3


def test_cache_scale_shrinks_every_cache_by_the_same_factor():
    fleet = [{**FLEET[0], "cache_tokens": 64_000}, {**FLEET[0], "chute_id": "99999999-9999-4999-8999-99999999999a", "name": "sim/other",
                                                     "instances": 1, "cache_tokens": 1_000_000}]
    with SimulatorProcess(fleet, time_scale=0.01, cache_scale=0.1) as s:
        caps = {c["name"]: [i["cache_capacity_tokens"] for i in c["instance_state"]] for c in s.state()["chutes"]}
        assert caps == {"sim/multi": [6400] * 4, "sim/other": [99_968]}  # 100,000 rounded down to 64-token blocks
        assert s.chute_state("sim/multi")["cache_tokens"] == 64_000  # the configured (unscaled) figure
        s.set_chute("sim/multi", cache_tokens=32_000)  # admin values are scaled too
        assert [i["cache_capacity_tokens"] for i in s.chute_state("sim/multi")["instance_state"]] == [3200] * 4
