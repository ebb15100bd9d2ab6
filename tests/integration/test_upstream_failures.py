"""What a client gets when the upstream fails, counted at an upstream that counts every attempt
(tests/integration/counting_upstream.py): the retry bound, the retry budget, 502/503/504 instead
of 500s, no key echoed back, one log line per failed attempt, pinned chutes, shared chutes."""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from chutes_lb.devstack import ProxyProcess, metric_value, write_config
from chutes_lb.localstack import ManagedProcess, free_port, wait_http
from tests.integration.reliability_matrix import Result, Row

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

KEY = "sk-test-failures-5b1e0c"
CHUTES_KEY = "cpk_test0000111122223333.echo-me-if-you-dare.canary4242"
A, B, C = ("aaaaaaaa-1111-5000-8000-00000000000a", "bbbbbbbb-1111-5000-8000-00000000000b", "cccccccc-1111-5000-8000-00000000000c")
D, E = ("dddddddd-1111-5000-8000-00000000000d", "eeeeeeee-1111-5000-8000-00000000000e")
NAMES = {A: "org/a", B: "org/b", C: "org/c", D: "org/dead-d", E: "org/dead-e"}
NUM_RETRIES = 3
BUDGET_PERCENT = 50  # generous for the other tests; the budget test still wants more retries than it allows


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = free_port()
    script = Path(__file__).with_name("counting_upstream.py")
    proc = ManagedProcess(f"counting-{port}", [os.sys.executable, str(script), str(port)]).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 20, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop(5)


@pytest.fixture(scope="module")
def proxy(upstream: str, redis_service) -> Iterator[ProxyProcess]:
    tmp = Path(tempfile.mkdtemp(prefix="chutes-failures-"))
    config = write_config(tmp / "config.yaml", [{"chute_id": c, "name": NAMES[c], "concurrency": 8} for c in (A, B, C)])
    data = yaml.safe_load(config.read_text())
    template = data["model_list"][0]
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: an unreachable upstream
    for entry in data["model_list"]:
        entry["litellm_params"].update(timeout=2, stream_timeout=2)
    data["model_list"] += [
        {"model_name": "dead", "litellm_params": {**template["litellm_params"], "model": f"openai/{NAMES[c]}", "api_base": closed,
                                                  "timeout": 2, "stream_timeout": 2}, "model_info": {"id": c, "concurrency": 8}}
        for c in (D, E)]
    # chute A is also the only chute of a model-specific group that falls back to the catch-all one
    data["model_list"].append({"model_name": "a-only", "litellm_params": {**template["litellm_params"], "model": f"openai/{NAMES[A]}",
                                                                          "timeout": 2, "stream_timeout": 2},
                               "model_info": {"id": A, "concurrency": 8}})
    data["router_settings"].update(num_retries=NUM_RETRIES, fallbacks=[{"a-only": ["chutes-models"]}],
                                   allowed_fails_policy={"RateLimitErrorAllowedFails": 1000000, "TimeoutErrorAllowedFails": 1000,
                                                         "InternalServerErrorAllowedFails": 1000,
                                                         "ServiceUnavailableErrorAllowedFails": 1000,
                                                         "AuthenticationErrorAllowedFails": 1000})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    p = ProxyProcess(upstream + "/v1", redis_service.url, KEY, f"failures-{uuid.uuid4().hex[:6]}", config=config, workers=1,
                     env={"CHUTES_API_KEY": CHUTES_KEY, "DEMO_MODE": "false", "RETRY_BUDGET_PERCENT": str(BUDGET_PERCENT)},
                     log_dir=str(tmp)).start()
    try:
        yield p
    finally:
        p.stop()


def mode(upstream: str, default: str, **by_model: str) -> None:
    httpx.post(upstream + "/_mode", json={"default": default, "by_model": by_model}, timeout=5).raise_for_status()
    httpx.post(upstream + "/_reset", timeout=5).raise_for_status()


def count(upstream: str) -> dict:
    return httpx.get(upstream + "/_count", timeout=5).json()


def chat(proxy: ProxyProcess, model: str = "chutes-models", stream: bool = False, timeout: float = 60) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": stream}
    return httpx.post(proxy.base_url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout)


@pytest.fixture(autouse=True)
def _recover(upstream: str) -> Iterator[None]:
    yield
    mode(upstream, "ok")
    time.sleep(1.1)  # 429 holds recover (a test that needs a fresh 10 s retry-budget window waits for it itself)


@pytest.mark.parametrize("status,expect,name", [("500", 502, "HTTP 500"), ("503", 503, "HTTP 503"), ("429", 429, "HTTP 429")])
@pytest.mark.parametrize("stream", [False, True])
def test_every_chute_failing_costs_at_most_one_plus_num_retries_attempts(proxy, upstream, status, expect, name, stream) -> None:
    mode(upstream, status)
    r = chat(proxy, stream=stream)
    assert r.status_code == expect, r.text
    err = r.json()["error"]
    assert name in err["message"] and err["type"] == ("rate_limit_error" if expect == 429 else "upstream_error")
    attempts = count(upstream)["total"]
    assert attempts <= 1 + NUM_RETRIES, f"{attempts} upstream attempts for one request"
    assert attempts == 3, attempts  # three chutes in the group: each tried once, none twice
    assert "Traceback" not in r.text
    if status == "500" and not stream:
        row = Row("every chute 500 (upstream attempts per request)", "tests/integration/test_upstream_failures.py::"
                  "test_every_chute_failing_costs_at_most_one_plus_num_retries_attempts",
                  note=f"{attempts} upstream attempts for one request (3 chutes; bound 1 + num_retries = 4; LiteLLM alone made 7-11); HTTP {r.status_code} naming each chute's HTTP 500")
        row.add([Result("failed_clear", r.status_code, None, r.json()["error"]["message"][:200])])
        row.save()


def test_text_completions_have_the_same_bound(proxy, upstream) -> None:
    mode(upstream, "500")
    r = httpx.post(proxy.base_url + "/v1/completions", json={"model": "chutes-models", "prompt": "hi", "max_tokens": 4},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 502 and count(upstream)["total"] == 3, (r.status_code, r.text)


def test_an_unreachable_upstream_is_a_502_naming_the_connect_error(proxy) -> None:
    t0 = time.monotonic()
    r = chat(proxy, model="dead")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert "connect error" in err["message"] and err["code"] == "bad_gateway"
    seconds = time.monotonic() - t0
    assert seconds < 10
    row = Row("unreachable upstream (nothing listens at the inference host)", "tests/integration/test_upstream_failures.py::"
              "test_an_unreachable_upstream_is_a_502_naming_the_connect_error",
              note="HTTP 502 bad_gateway naming 'connect error' per attempt, one log line per attempt, no traceback (was: HTTP 500 after 1 s and ~150 log lines)")
    row.add([Result("failed_clear", r.status_code, None, err["message"][:200], seconds)])
    row.save()


def test_a_hung_upstream_is_a_504(proxy, upstream) -> None:
    mode(upstream, "hang")
    r = chat(proxy, timeout=120)
    assert r.status_code == 504, r.text
    assert "timeout" in r.json()["error"]["message"] and count(upstream)["total"] <= 1 + NUM_RETRIES


def test_a_key_echoed_by_the_upstream_never_reaches_the_client_or_the_log(proxy, upstream) -> None:
    mode(upstream, "echo")
    headers = {"Authorization": f"Bearer {KEY}"}
    answers = [chat(proxy), chat(proxy, stream=True),
               httpx.post(proxy.base_url + "/v1/completions", json={"model": "chutes-models", "prompt": "hi"}, headers=headers, timeout=60),
               httpx.get(proxy.base_url + "/health", headers=headers, timeout=60)]
    for r in answers:
        assert CHUTES_KEY not in r.text and "echo-me-if-you-dare" not in r.text, r.text[:500]
    assert any("Invalid token" in r.text for r in answers)  # the upstream did echo it: the proxy redacted it
    assert CHUTES_KEY not in proxy.process.log_text()
    assert answers[0].status_code == 502 and count(upstream)["total"] >= 1


def test_a_client_request_may_not_pin_a_chute_past_the_router(proxy, upstream) -> None:
    before = metric_value(proxy.metrics_text(), "chutes_lb_routing_decisions_total")
    for model in (A, NAMES[A], f"openai/{NAMES[A]}"):
        r = chat(proxy, model=model)
        assert r.status_code == 400, (model, r.text)
        err = r.json()["error"]
        assert err["code"] == "model_is_a_chute" and "model group" in err["message"]
    r = chat(proxy, model="no-such-group")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert count(upstream)["total"] == 0
    assert metric_value(proxy.metrics_text(), "chutes_lb_routing_decisions_total") == before


def test_one_chute_in_two_groups_and_a_fallback_between_them(proxy, upstream) -> None:
    served = {chat(proxy, model="a-only").headers.get("x-litellm-model-id") for _ in range(4)}
    assert served == {A}
    mode(upstream, "ok", **{NAMES[A]: "500"})
    r = chat(proxy, model="a-only")  # chute A fails: the group falls back to chutes-models, minus A
    assert r.status_code == 200, r.text
    assert r.headers["x-litellm-model-id"] in (B, C) and r.headers["x-chutes-lb-attempts"] == "2"
    assert count(upstream)["by_model"].get(NAMES[A]) == 1
    info = httpx.get(proxy.base_url + "/info", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    a = next(d for d in info["deployments"] if d["chute_id"] == A)
    assert sorted(a["model_groups"]) == ["a-only", "chutes-models"]


def test_the_retry_budget_holds_retries_to_a_share_of_the_request_rate(proxy, upstream) -> None:
    mode(upstream, "500")
    time.sleep(10.5)  # a fresh 10 s budget window: earlier tests' requests no longer count
    n = 30
    statuses = [chat(proxy).status_code for _ in range(n)]
    assert set(statuses) == {502}
    attempts = count(upstream)["total"]
    # 2 retries per request would be 90 attempts; the budget allows 2/s x 10 s + 50% of 30 requests
    assert attempts <= n + 20 + BUDGET_PERCENT / 100 * n + 2, attempts
    assert metric_value(proxy.metrics_text(), "chutes_lb_retry_budget_exhausted_total") > 0


def test_retries_that_serve_their_request_do_not_spend_the_budget(proxy, upstream) -> None:
    """Every request needs one retry and that retry serves it (group a-only's one chute answers
    429, its fallback has room): a burst of 429s while other chutes have room. Without the refund
    the budget (2/s x 10 s + 50% of 70 requests = 55) refused ~15 of these retries: 429s to
    clients that another chute would have served."""
    mode(upstream, "ok", **{NAMES[A]: "429"})
    time.sleep(10.5)  # a fresh 10 s budget window
    refused = metric_value(proxy.metrics_text(), "chutes_lb_retry_budget_exhausted_total") or 0
    n = 70
    answers = [chat(proxy, model="a-only") for _ in range(n)]
    assert [r.status_code for r in answers] == [200] * n, next(r.text for r in answers if r.status_code != 200)
    assert {r.headers["x-chutes-lb-attempts"] for r in answers} == {"2"}
    assert count(upstream)["total"] == 2 * n
    assert (metric_value(proxy.metrics_text(), "chutes_lb_retry_budget_exhausted_total") or 0) == refused


def test_one_log_line_per_failed_attempt_and_no_traceback(proxy, upstream) -> None:
    mode(upstream, "503")
    time.sleep(10.5)  # a fresh retry-budget window
    before = proxy.process.log_text()
    chat(proxy)
    time.sleep(0.5)
    new = proxy.process.log_text()[len(before):]
    failed = [line for line in new.splitlines() if "upstream attempt failed" in line]
    assert len(failed) == count(upstream)["total"] == 3, new
    assert "Traceback" not in proxy.process.log_text()
    assert "\x1b[" not in proxy.process.log_text()  # no colour codes in a log file


def test_a_402_costs_one_attempt_and_the_next_request_after_the_quota_returns_is_served(proxy, upstream) -> None:
    """Before: LiteLLM cooled down every chute that answered 402 and 20 of 24 requests got
    '503 every chute of the group is cooling down'; one more 503 after the quota came back."""
    mode(upstream, "quota")
    answers = [chat(proxy) for _ in range(24)]
    assert [r.status_code for r in answers] == [402] * 24, next((r.text for r in answers if r.status_code != 402), "")
    for r in answers:
        err = r.json()["error"]
        assert "Quota exceeded and account balance is $0.0" in err["message"] and "2026-12-09T00:00:00Z" in err["message"]
    assert count(upstream)["total"] == 24  # one attempt each: every chute would refuse the account alike
    mode(upstream, "ok")
    r = chat(proxy)
    assert r.status_code == 200 and r.headers["x-chutes-lb-attempts"] == "1", r.text


@pytest.mark.parametrize("kind,text", [("spam", "Stop spamming this prompt"), ("daily", "100 requests per day")])
def test_a_per_user_429_goes_back_at_once(proxy, upstream, kind, text) -> None:
    """Before: retry.failure_of retried any 429 whatever its body (10 requests, 32 attempts)."""
    mode(upstream, kind)
    answers = [chat(proxy) for _ in range(10)]
    assert [r.status_code for r in answers] == [429] * 10
    assert all(text in r.json()["error"]["message"] and r.headers.get("retry-after") for r in answers)
    assert count(upstream)["total"] == 10


def test_every_429_and_503_carries_retry_after(proxy, upstream) -> None:
    """Before: only the cooldown 503 had one; an upstream Retry-After was ignored."""
    mode(upstream, "capacity")
    r = chat(proxy)
    assert r.status_code == 429 and r.headers.get("retry-after") == "7", (r.status_code, dict(r.headers))
    mode(upstream, "503")
    r = chat(proxy, stream=True)
    assert r.status_code == 503 and int(r.headers.get("retry-after", "0")) >= 1, (r.status_code, dict(r.headers))


def test_agent_requests_reach_the_upstream_with_string_contents(proxy, upstream) -> None:
    """Chutes' in-chute prefix routing works only on plain-string contents. Before: Messages and
    Responses sent user contents as lists of text parts and Responses' developer as a second
    system message."""
    headers = {"Authorization": f"Bearer {KEY}"}
    blocks = [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"}, {"type": "text", "text": "hello",
                                                                                     "cache_control": {"type": "ephemeral"}}]
    r = httpx.post(proxy.base_url + "/v1/messages", headers=headers, timeout=60, json={
        "model": "chutes-models", "max_tokens": 8, "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": blocks}]})
    assert r.status_code == 200, r.text
    r = httpx.post(proxy.base_url + "/v1/responses", headers=headers, timeout=60, json={
        "model": "chutes-models", "instructions": "Be terse.",
        "input": [{"role": "developer", "content": "Follow the rules."}, {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]})
    assert r.status_code == 200, r.text
    sent = httpx.get(upstream + "/_bodies", timeout=5).json()[-2:]
    for body in sent:
        assert all(isinstance(m["content"], str) for m in body["messages"]), body["messages"]
        assert [m["role"] for m in body["messages"]].count("system") == 1
        assert "cache_control" not in str(body)


def test_a_maintenance_429_is_served_elsewhere_and_that_chute_is_held(proxy, upstream) -> None:
    mode(upstream, "ok", **{NAMES[A]: "maintenance"})
    answers = [chat(proxy) for _ in range(20)]
    assert [r.status_code for r in answers] == [200] * 20
    assert count(upstream)["by_model"].get(NAMES[A], 0) <= 1  # tried once at most, then held (120 s)
