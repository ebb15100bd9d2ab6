"""Chutes' error classes, injected per chute or for the whole account: exact status, body and headers."""
from __future__ import annotations

import datetime

import httpx
import pytest

from chutes_lb.simulator.launch import AdminError

from sim_fleets import FAST_ID, FLEET, TIME_SCALE, module_simulator

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "x"}]
CLASSES = [
    ("infra_overload", 429, {"detail": "Infrastructure is at maximum capacity, try again later"}),
    ("maintenance", 429, {"detail": "model is under maintenance"}),
    ("spam", 429, {"detail": "Stop spamming this prompt, please..."}),
    ("daily_limit", 429, {"detail": "Daily request limit reached for this account (free models: 100 requests per day), "
                                    "try again after the reset"}),
    ("no_instances", 503, {"detail": f"No instances available (yet) for chute_id={FAST_ID}"}),
    ("no_infrastructure", 500, {"detail": "No infrastructure available to serve request"}),
]
QUOTA_DETAIL = "Quota exceeded and account balance is $0.0, please pay with fiat or send tao to the wallet"


sim = module_simulator(FLEET, time_scale=TIME_SCALE, filler_entries=0)


def _chat(sim_http: httpx.Client, model: str = "sim/fast") -> httpx.Response:
    return sim_http.post("/v1/chat/completions", json={"model": model, "messages": MSG})


def _reset_timestamp_ok(value: str) -> None:
    when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert (when.hour, when.minute, when.second) == (0, 0, 0) and now < when <= now + datetime.timedelta(days=1)


@pytest.mark.parametrize("kind,status,body", CLASSES)
def test_each_class_per_chute(sim, sim_http, kind, status, body):
    sim.set_chute("sim/fast", error_rate=1.0, error_kind=kind)
    r = _chat(sim_http)
    assert (r.status_code, r.json()) == (status, body)
    assert r.headers["X-Chutes-InvocationID"]
    assert _chat(sim_http, "sim/slow").status_code == 200  # one chute only


@pytest.mark.parametrize("kind,status,body", CLASSES)
def test_each_class_for_the_account(sim, sim_http, kind, status, body):
    sim.set_account(error_rate=1.0, error_kind=kind)
    r = _chat(sim_http)
    assert (r.status_code, r.json()) == (status, body)
    assert _chat(sim_http, "sim/slow").status_code == status  # every chute


def test_402_carries_the_quota_reset_time(sim, sim_http):
    sim.set_chute("sim/fast", error_rate=1.0, error_kind="quota")
    r = _chat(sim_http)
    assert r.status_code == 402 and r.json()["detail"] == QUOTA_DETAIL
    _reset_timestamp_ok(r.json()["quota_reset_timestamp"])
    # error_status alone gets Chutes' body for that status
    sim.set_chute("sim/fast", error_kind=None, error_status=503)
    assert _chat(sim_http).json() == {"detail": f"No instances available (yet) for chute_id={FAST_ID}"}


def test_quota_headers_and_the_real_402(sim, sim_http):
    r = _chat(sim_http)  # a pay-as-you-go account: 0/0/0, as captured from Chutes
    assert r.status_code == 200
    assert {k: r.headers[k] for k in ("X-Chutes-Quota-Total", "X-Chutes-Quota-Used", "X-Chutes-Quota-Remaining", "X-Chutes-RL-User")} \
        == {"X-Chutes-Quota-Total": "0", "X-Chutes-Quota-Used": "0", "X-Chutes-Quota-Remaining": "0", "X-Chutes-RL-User": "60"}
    assert "X-Chutes-RL-Chute" not in r.headers
    state = sim.set_account(quota_total=3, quota_used=1, balance=0, rl_user="inf", rl_chute=20)
    assert state["quota_used"] == 1 and state["quota_total"] == 3
    seen = []
    for _ in range(2):
        r = _chat(sim_http)
        assert r.status_code == 200
        seen.append((r.headers["X-Chutes-Quota-Used"], r.headers["X-Chutes-Quota-Remaining"]))
    assert seen == [("1", "2"), ("2", "1")]  # the snapshot before the invocation
    assert r.headers["X-Chutes-RL-User"] == "inf" and r.headers["X-Chutes-RL-Chute"] == "20"
    r = _chat(sim_http)  # quota used up, balance 0: 402
    assert r.status_code == 402 and r.json()["detail"] == QUOTA_DETAIL
    assert r.headers["X-Chutes-Quota-Remaining"] == "0"
    _reset_timestamp_ok(r.json()["quota_reset_timestamp"])
    sim.set_account(balance=5.0)  # pay as you go beyond the quota
    assert _chat(sim_http).status_code == 200


def test_account_errors_do_not_fail_over_but_chute_ones_do(sim, sim_http):
    sim.set_account(error_rate=1.0, error_kind="maintenance")
    assert _chat(sim_http, "sim/fast,sim/slow").status_code == 429
    sim.set_account(error_rate=0.0)
    sim.set_chute("sim/fast", error_rate=1.0, error_kind="maintenance")
    assert _chat(sim_http, "sim/fast,sim/slow").json()["model"] == "sim/slow"
    sim.set_chute("sim/fast", error_kind="quota")  # a 402 is returned, not failed over
    assert _chat(sim_http, "sim/fast,sim/slow").status_code == 402


def test_validation(sim):
    for bad in ({"error_kind": "oops"}, {"quota_total": -1}, {"rl_user": "lots"}, {"balance": "x"}, {"nope": 1}):
        with pytest.raises(AdminError) as err:
            sim.set_account(**bad)
        assert err.value.status == 400
    with pytest.raises(AdminError) as err:
        sim.set_chute("sim/fast", error_kind="oops")
    assert err.value.status == 400
