"""The whole stack for real: compose up (demo mode), OpenAI SDK through HAProxy, Prometheus
scraping every replica, every dashboard query returning data, a replica stopped under load
costing no request, and ``down -v`` leaving nothing behind. Tests run in file order and share
one stack (session fixture ``stack``); the last test tears it down and checks."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.compose_stack import ROOT, Stack, _run, say, wait_for

# The first test also pays for the session fixture (image build up to 900 s + up to 300 s).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

MODEL = "chutes-models"
PROMPT = [{"role": "user", "content": "Say hello in five words."}]


def client(stack: Stack, **kw):  # type: ignore[no-untyped-def]
    import openai

    # max_retries=0: a failure must show up here, not be hidden by the SDK retrying.
    return openai.OpenAI(base_url=stack.api_base + "/v1", api_key=stack.master_key, max_retries=0, timeout=60, **kw)


def send_traffic(stack: Stack, n: int, stream_every: int = 3, concurrency: int = 4) -> Counter:
    c = client(stack)
    outcomes: Counter = Counter()

    def one(i: int) -> str:
        try:
            if i % stream_every == 0:
                chunks = list(c.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16, stream=True))
                return "ok" if chunks else "empty"
            c.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - counted, reported by the caller
            return type(exc).__name__

    with ThreadPoolExecutor(concurrency) as pool:
        outcomes.update(pool.map(one, range(n)))
    return outcomes


# ---------------------------------------------------------------- the stack is up and shaped right
def test_every_service_healthy_with_two_proxy_replicas(stack: Stack) -> None:
    rows = stack.containers()
    by_service = Counter(r["Service"] for r in rows)
    assert by_service["proxy"] == 2, rows
    for r in rows:
        assert r["State"] == "running" and r.get("Health") in ("healthy", ""), r
        if r["Service"] != "lb":
            assert "healthy" == r.get("Health"), r


def test_only_the_front_door_is_published(stack: Stack) -> None:
    for r in stack.containers():
        published = [p for p in r.get("Publishers") or [] if p.get("PublishedPort")]
        if r["Service"] == "lb":
            assert {p["TargetPort"] for p in published} == {4000}
        elif r["Service"] == "prometheus":  # compose.test.yaml only, loopback only
            assert all(p["URL"] == "127.0.0.1" for p in published), published
        else:
            assert not published, (r["Service"], published)


def test_containers_run_non_root_with_read_only_root(stack: Stack) -> None:
    for r in stack.containers():
        info = json.loads(_run(["docker", "inspect", r["ID"]]).stdout)[0]
        assert info["HostConfig"]["ReadonlyRootfs"] is True, r["Service"]
        assert info["HostConfig"]["Init"] is True, r["Service"]
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", r["Service"]
        uid = _run(["docker", "exec", r["ID"], "id", "-u"]).stdout.strip()
        assert uid and uid != "0", (r["Service"], uid)


# ---------------------------------------------------------------- the API through HAProxy
def test_openai_sdk_plain_and_streamed(stack: Stack) -> None:
    c = client(stack)
    assert MODEL in {m.id for m in c.models.list().data}
    resp = c.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16)
    assert resp.choices[0].message.content
    chunks = list(c.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=16, stream=True))
    text = "".join((ch.choices[0].delta.content or "") for ch in chunks if ch.choices)
    assert len(chunks) > 1 and text
    completion = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert completion.choices[0].text


def test_wrong_or_missing_key_is_refused(stack: Stack) -> None:
    import openai

    with pytest.raises(openai.APIStatusError) as err:
        openai.OpenAI(base_url=stack.api_base + "/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(model=MODEL, messages=PROMPT)
    assert 400 <= err.value.status_code < 500


def test_metrics_are_not_public(stack: Stack) -> None:
    for path in ("/metrics", "/metrics/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(stack.api_base + path, timeout=10)
        assert err.value.code in (403, 404), path


# ---------------------------------------------------------------- observability
def test_traffic_reaches_both_replicas_and_prometheus_sees_them(stack: Stack) -> None:
    outcomes = send_traffic(stack, 40)
    assert outcomes == Counter(ok=40), outcomes

    def per_instance() -> dict[str, float]:
        rows = stack.query("sum by (instance) (chutes_lb_upstream_requests_total)")
        served = {r["metric"]["instance"]: float(r["value"][1]) for r in rows}
        return served if len([v for v in served.values() if v > 0]) >= 2 else {}

    served = wait_for(per_instance, 60, what="both proxy replicas' request counters in Prometheus")
    say(f"requests per replica: {served}")


def test_prometheus_has_every_replica_and_service_up(stack: Stack) -> None:
    def targets() -> dict[str, list[str]]:
        active = stack.prom("/api/v1/targets", state="active")["activeTargets"]
        health: dict[str, list[str]] = {}
        for t in active:
            health.setdefault(t["labels"]["job"], []).append(t["health"])
        ok = health.get("proxy") == ["up", "up"] and all(health.get(j) == ["up"] for j in ("utilization-poller", "lb"))
        return health if ok else {}

    wait_for(targets, 60, what="2 proxy targets + poller + lb up")


def test_proxy_logs_show_routing(stack: Stack) -> None:
    logs = stack.logs("proxy")
    assert "routing" in logs
    replicas = {line.split("|", 1)[0].strip() for line in logs.splitlines() if "routing" in line and "|" in line}
    assert len(replicas) >= 1, replicas


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "chutes-lb.json").read_text())
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    # $__rate_interval is >= 4 scrape intervals in Grafana (timeInterval 10s): use 1m here.
    pending = {(title, e.replace("$__rate_interval", "1m")) for title, e in exprs}
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        send_traffic(stack, 6)  # keep rates non-zero while we look
        pending = {(title, e) for title, e in pending if not stack.query(e)}
        if pending:
            time.sleep(5)
    assert not pending, "dashboard queries without data:\n" + "\n".join(f"{t}: {e}" for t, e in sorted(pending))


# ---------------------------------------------------------------- scaling and resilience
def test_scaling_proxy_needs_no_config_change(stack: Stack) -> None:
    """--scale proxy=3: HAProxy (Docker DNS) and Prometheus (dns_sd) pick the new replica up."""
    stack.compose("up", "-d", "--no-deps", "--no-recreate", "--wait", "--wait-timeout", "240", "--scale", "proxy=3", "proxy", timeout=300)
    assert len([r for r in stack.containers("proxy") if r["State"] == "running"]) == 3

    def lb_and_prometheus_see_three() -> bool:
        active = stack.query('max(haproxy_backend_active_servers{proxy="proxies"})')
        targets = stack.query('sum(up{job="proxy"})')
        return bool(active and targets and float(active[0]["value"][1]) == 3 and float(targets[0]["value"][1]) == 3)

    wait_for(lb_and_prometheus_see_three, 90, what="3 active HAProxy servers and 3 proxy targets up")
    outcomes = send_traffic(stack, 30, concurrency=6)
    assert outcomes == Counter(ok=30), outcomes

    def third_replica_served() -> bool:
        rows = stack.query("sum by (instance) (chutes_lb_upstream_requests_total) > 0")
        return len(rows) == 3

    wait_for(third_replica_served, 60, what="all 3 replicas serving requests")


def run_load_while(stack: Stack, action: list[str], streams: bool, workers: int = 6) -> tuple[Counter, list[str], int]:
    """Closed-loop load from ``workers`` threads; ``action`` (a docker command) runs mid-way."""
    c = client(stack)
    stop = threading.Event()
    results: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if streams and (i + k) % 4 == 0:
                    assert list(c.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=32, stream=True))
                else:
                    assert c.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=32).choices
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                outcome = "failed"
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
            with lock:
                results[outcome] += 1

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(workers)]
    for t in threads:
        t.start()
    time.sleep(6)
    before = results["ok"]
    say(f"{' '.join(action)} under load ({before} requests so far)")
    done = _run(action, timeout=90)
    assert done.returncode == 0, done.stderr
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join(timeout=90)
    say(f"load during {action[1]}: {dict(results)}")
    return results, errors, before


def running_proxies(stack: Stack) -> list[str]:
    return [r["Name"] for r in stack.containers("proxy") if r["State"] == "running"]


def test_stopping_a_replica_under_load_costs_no_request(stack: Stack) -> None:
    """docker stop (SIGTERM, graceful): plain and streamed requests all succeed."""
    proxies = running_proxies(stack)
    assert len(proxies) >= 2
    results, errors, before = run_load_while(stack, ["docker", "stop", "--time", "30", proxies[0]], streams=True)
    assert results["failed"] == 0, errors[:10]
    assert results["ok"] > before + 10, results  # traffic kept flowing on the other replicas


def test_killing_a_replica_under_load_fails_only_what_was_in_flight_and_clearly(stack: Stack) -> None:
    """docker kill (SIGKILL, no goodbye): a request in flight on the dead replica may already
    have reached a chute (Chutes bills a repeat on another chute in full), so HAProxy does not
    replay it: the client gets a clear 502 in OpenAI's shape, or, for a request on a kept-alive
    connection, HAProxy closes that connection without an answer (HTTP's signal that the client
    may retry; the SDK reports a connection error). New connections go to the live replica
    (HAProxy retries connections that never reached one), so nothing else fails."""
    proxies = running_proxies(stack)
    assert len(proxies) >= 2
    workers = 6
    results, errors, before = run_load_while(stack, ["docker", "kill", proxies[0]], streams=False, workers=workers)
    assert results["failed"] <= workers, errors[:10]  # at most the requests in flight at the kill
    assert all("InternalServerError" in e or "502" in e or "bad_gateway" in e or "APIStatusError" in e
               or e.startswith("APIConnectionError") for e in errors), errors[:10]
    assert results["ok"] > before + 10, results
    retried = stack.query('sum(haproxy_backend_retry_warnings_total{proxy="proxies"}) + sum(haproxy_backend_redispatch_warnings_total{proxy="proxies"})')
    say(f"HAProxy retries + redispatches so far: {retried[0]['value'][1] if retried else 'n/a'}")


def test_one_request_costs_at_most_one_plus_num_retries_attempts_through_the_front_door(stack: Stack) -> None:
    """Every chute answers 500: the client gets one clear 502, and the chutes together received
    at most 1 + num_retries (3) attempts: no layer (SDK, HAProxy, LiteLLM, the router) adds any."""
    def received() -> int:
        return sum(c["received"] for c in stack.sim_admin("GET", "/admin/state")["chutes"])

    import httpx

    for chute in stack.sim_admin("GET", "/admin/state")["chutes"]:
        stack.sim_admin("POST", "/admin/chutes/" + chute["chute_id"], {"error_rate": 1.0, "error_status": 500})
    try:
        before = received()
        r = httpx.post(stack.api_base + "/v1/chat/completions", json={"model": MODEL, "messages": PROMPT, "max_tokens": 8},
                       headers={"Authorization": f"Bearer {stack.master_key}"}, timeout=60)
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "bad_gateway" and "HTTP 500" in r.json()["error"]["message"]
        attempts = received() - before
        assert 1 <= attempts <= 4, attempts
    finally:
        stack.sim_admin("POST", "/admin/reset", {})
    time.sleep(11)  # LiteLLM's cooldown of the failed chutes (cooldown_time 10 s) ends before the next test


def test_real_mode_without_chutes_key_fails_fast(stack: Stack) -> None:
    """compose.yaml alone is real mode: the poller refuses to start without CHUTES_API_KEY and
    says so; it never falls back to the simulator."""
    proc = stack.compose(
        "run", "--rm", "--no-deps", "-T", "-e", "CHUTES_API_KEY=", "utilization-poller",
        files=["-f", "compose.yaml"], timeout=120, check=False,
    )
    assert proc.returncode != 0
    assert "CHUTES_API_KEY" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- teardown
def test_down_removes_everything(stack: Stack) -> None:
    stack.down()
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("ps -a -q", "network ls -q", "volume ls -q"):
        out = _run(["docker", *kind.split(), "--filter", label]).stdout.strip()
        assert out == "", f"docker {kind} still lists: {out}"
