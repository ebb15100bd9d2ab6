"""Session affinity on the real proxy (LiteLLM, 2 workers, our hook) over the simulator, plus a
second replica: a conversation stays on one chute, moves when that chute is full or answers 429,
and both replicas choose the same chute for the same session."""
from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Iterator

import httpx
import pytest

from chutes_lb.devstack import ProxyProcess, metric_value
from chutes_lb.routing.affinity import OUTCOMES
from tests.integration.proxy_stack import FLEET, MASTER_KEY, NAMES, Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def stack(redis_service) -> Iterator[Stack]:
    # No slow-chute rule here (it has its own tests, and affinity's use of it tests/unit/test_affinity.py):
    # at time_scale 0.1 a request takes ~50 ms upstream, so on a loaded machine the proxy's own
    # CPU time is most of what a worker measures, and a chute that served a cold worker's first
    # requests looked 2.6x slower than the fleet (measured with two busy cores), which moved sessions.
    s = start_stack(redis_service.url, f"test-affinity-{uuid.uuid4().hex[:8]}", time_scale=0.1,
                    proxy_env={"ROUTING_SLOW_RATIO": "0"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(s.url + "/info", headers=AUTH, timeout=30).json()["snapshot"]["state"] == "ok":
                break
            time.sleep(0.5)
        yield s
    finally:
        s.stop()


@pytest.fixture(autouse=True)
def clean_faults(stack: Stack) -> Iterator[None]:
    yield
    stack.sim.reset()


def conversation(task: str, turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": task}]
    out = []
    for k in range(turns):
        out.append({"model": "chutes-models", "max_tokens": 16, "messages": list(messages)})
        messages += [{"role": "assistant", "content": f"step {k} done"}, {"role": "user", "content": f"next step {k}"}]
    return out


def served(url: str, body: dict, headers: dict | None = None) -> str:
    r = httpx.post(url + "/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=60)
    assert r.status_code == 200, r.text
    return r.headers["x-litellm-model-id"]


def affinity_outcomes(stack: Stack) -> Counter:
    """This proxy's affinity decisions so far by outcome (both workers: multiprocess metrics)."""
    text = stack.proxy.metrics_text()
    return Counter({o: metric_value(text, "chutes_lb_affinity_decisions_total", {"outcome": o}) for o in OUTCOMES})


def test_two_replicas_choose_the_same_chute_for_the_same_session(stack: Stack, redis_service) -> None:
    """(First in the module: both replicas start from the same knowledge, as steady replicas converge to.)"""
    second = ProxyProcess(stack.sim.openai_base, redis_service.url, MASTER_KEY, stack.prefix, config=stack.tmp / "litellm-config.yaml",
                          workers=1, env={"SNAPSHOT_REFRESH_SECONDS": "1", "INFLIGHT_PUBLISH_SECONDS": "0.5"}).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and httpx.get(second.base_url + "/info", headers=AUTH, timeout=30).json()["snapshot"]["state"] != "ok":
            time.sleep(0.5)
        agree = Counter()
        for k in range(8):
            session = {"x-session-id": f"session-{k}"}
            body = conversation(f"task {k}", 1)[0]
            agree[served(stack.url, body, session) == served(second.base_url, body, session)] += 1
        assert agree[True] == 8, agree
    finally:
        second.stop()


def test_a_five_turn_conversation_stays_on_one_chute(stack: Stack) -> None:
    before = metric_value(stack.proxy.metrics_text(), "chutes_lb_affinity_decisions_total", {"outcome": "hit"})
    homes = []
    for task in ("refactor the parser", "write the tests", "fix the flaky job"):
        chutes = [served(stack.url, body) for body in conversation(task, 5)]  # each turn a new connection: either worker
        assert len(set(chutes)) == 1, (task, [NAMES[c] for c in chutes])
        homes.append(chutes[0])
    assert metric_value(stack.proxy.metrics_text(), "chutes_lb_affinity_decisions_total", {"outcome": "hit"}) - before >= 15
    log = stack.proxy.process.log_text()
    assert "affinity" in log and "refactor the parser" not in log  # the log says why, never the prompt


def test_the_conversation_moves_when_its_chute_answers_429_or_is_full(stack: Stack) -> None:
    """(Last in the module: the hung requests below make their chute look slow for a while.)"""
    turns = conversation("migrate the database", 6)
    home = served(stack.url, turns[0])
    stack.sim.set_chute(home, error_rate=1.0, error_status=429)
    moved = served(stack.url, turns[1])
    assert moved != home
    stack.sim.reset()
    time.sleep(1.0)  # the 429 hold is about one slot-free time
    before = affinity_outcomes(stack)
    back = served(stack.url, turns[2])
    assert back == home, (NAMES[back], affinity_outcomes(stack) - before)  # back on its own chute (its cache) once it has room
    # full: the home chute's slots are taken by hung requests; the session moves, nothing fails
    stack.sim.set_chute(home, hang=True)
    cap = next(c["instances"] * c["concurrency"] for c in FLEET if c["chute_id"] == home)
    import threading

    hung = [threading.Thread(target=lambda b=b: httpx.post(stack.url + "/v1/chat/completions", json=b, headers=AUTH, timeout=30),
                             daemon=True) for b in [turns[3]] * cap]
    for t in hung:
        t.start()
    time.sleep(2.0)  # the exchange shares the in-flight counts between the workers
    elsewhere = served(stack.url, turns[4])
    assert elsewhere != home
    stack.sim.set_chute(home, hang=False)
    for t in hung:
        t.join(40)
