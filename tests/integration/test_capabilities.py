"""Routing on what each chute can do, against the real proxy and the simulator: a chute whose
context window is too small for a prompt is never sent it (before: 3 of 20 ~17k-token prompts
went there and came back as vLLM's 400), and a request too long for every window is one clear
400 naming the largest window, without trying any chute."""
from __future__ import annotations

import uuid
from typing import Iterator

import httpx
import pytest

from tests.integration.proxy_stack import FLEET, MASTER_KEY, Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SMALL = FLEET[2]["chute_id"]  # 4 slots, window 8,192
WINDOWS = {FLEET[0]["chute_id"]: 163_840, FLEET[1]["chute_id"]: 131_072, SMALL: 8_192}
HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def stack(redis_service) -> Iterator[Stack]:
    s = start_stack(redis_service.url, f"caps-{uuid.uuid4().hex[:6]}", time_scale=0.05, windows=WINDOWS)
    try:
        yield s
    finally:
        s.stop()


def long_text(tokens: int) -> str:
    return (uuid.uuid4().hex + " ") + "lorem ipsum " * (tokens * 4 // 12)  # ~4 bytes a token, as Chutes' window counts


def test_twenty_long_prompts_are_all_served_none_by_the_small_window(stack: Stack) -> None:
    served = []
    with httpx.Client(base_url=stack.url, headers=HEADERS, timeout=120) as client:
        for i in range(20):
            if i % 2:
                r = client.post("/v1/chat/completions", json={"model": "chutes-models", "max_tokens": 16,
                                                              "messages": [{"role": "user", "content": long_text(17_000)}]})
            else:
                r = client.post("/v1/messages", json={"model": "chutes-models", "max_tokens": 16,
                                                      "messages": [{"role": "user", "content": long_text(17_000)}]})
            assert r.status_code == 200, r.text
            served.append(r.headers["x-litellm-model-id"])
    assert SMALL not in served and len(served) == 20


def test_max_tokens_beyond_every_window_is_one_clear_400(stack: Stack) -> None:
    r = httpx.post(stack.url + "/v1/chat/completions", headers=HEADERS, timeout=60, json={
        "model": "chutes-models", "max_tokens": 200_000, "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "163840" in message and "Traceback" not in message
    assert "x-chutes-lb-attempts" not in r.headers


def test_info_shows_each_chute_s_window(stack: Stack) -> None:
    info = httpx.get(stack.url + "/info", headers=HEADERS, timeout=30).json()
    assert {d["chute_id"]: d["max_model_len"] for d in info["deployments"]} == WINDOWS
