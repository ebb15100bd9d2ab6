"""routing/retry.py: which failures are retried, the status a client gets, and the retry budget
(time passed in, so every case is computed by hand)."""
from __future__ import annotations

import pytest

from chutes_lb.routing.retry import Failure, RetryBudget, failure_of, final_status


@pytest.mark.parametrize("kind,status,message,outcome,what,retryable", [
    ("RateLimitError", 429, "", "rate_limited", "HTTP 429", True),
    ("InternalServerError", 500, "boom", "error", "HTTP 500", True),
    ("ServiceUnavailableError", 503, "", "error", "HTTP 503", True),
    ("Timeout", None, "", "timeout", "timeout", True),
    ("APIConnectionError", None, "Connection refused", "error", "connect error", True),
    # the request's or the account's: says nothing of the chute's health (issue 21: was "error")
    ("BadRequestError", 400, "prompt too long", "rejected", "HTTP 400", False),
    ("AuthenticationError", 401, "", "rejected", "HTTP 401", False),
    ("RouterRateLimitError", None, "No deployments available", "error",
     "no chute available (every chute of the group is cooling down after errors)", False),
])
def test_failure_of_classifies_what_an_attempt_raised(kind, status, message, outcome, what, retryable) -> None:
    f = failure_of(kind, status, message)
    assert (f.outcome, f.what, f.retryable) == (outcome, what, retryable)


@pytest.mark.parametrize("status,message,outcome,retryable", [
    # Chutes' error classes (shared/reference/chutes-api.md, "Error classes"), bodies as Chutes sends them
    (429, "{'detail': 'Infrastructure is at maximum capacity, try again later'}", "rate_limited", True),
    (429, "{'detail': 'infra_overload'}", "rate_limited", True),
    (429, "{'detail': 'model is under maintenance'}", "maintenance", True),
    (429, "{'detail': 'Stop spamming this prompt, please...'}", "rejected", False),
    (429, "{'detail': 'Free model limit reached: 100 requests per day'}", "rejected", False),
    (402, "{'detail': 'Quota exceeded and account balance is $0.0', 'quota_reset_timestamp': '2026-12-09T00:00:00Z'}",
     "rejected", False),
    (503, "{'detail': 'No instances available (yet) for chute_id=abc'}", "error", True),
    (400, "This model's maximum context length is 8192 tokens. However, you requested 17000 tokens", "rejected", False),
    (400, "tools are not supported by this model", "rejected", False),
])
def test_chutes_error_classes(status, message, outcome, retryable) -> None:
    f = failure_of("APIStatusError", status, message)
    assert (f.outcome, f.retryable, f.status) == (outcome, retryable, status)


def test_the_account_s_limits_reach_the_client_with_chutes_status() -> None:
    assert final_status([failure_of("PaymentRequired", 402, "quota exceeded")]) == 402
    assert final_status([failure_of("RateLimitError", 429, "Stop spamming this prompt, please...")]) == 429
    assert final_status([failure_of("RateLimitError", 429, "model is under maintenance"),
                         failure_of("RateLimitError", 429, "infra_overload")]) == 429
    assert final_status([failure_of("AuthenticationError", 401, "bad key")]) == 502  # the proxy's key, not the client's


def test_final_status_is_429_only_when_every_attempt_was_rate_limited() -> None:
    r429 = failure_of("RateLimitError", 429)
    r502 = failure_of("InternalServerError", 500)
    assert final_status([r429, r429]) == 429
    assert final_status([r429, r502]) == 502
    assert final_status([r502, failure_of("Timeout", None)]) == 504
    assert final_status([failure_of("BadRequestError", 400)]) == 400
    assert final_status([r429, Failure("error", "no chute available", False, None, upstream=False)]) == 429
    assert final_status([]) == 502


def test_the_budget_is_a_floor_plus_a_share_of_the_requests_in_the_window() -> None:
    b = RetryBudget(percent=0.5, min_per_second=0.2, window=10.0)  # floor: 2 retries per 10 s
    for i in range(10):
        b.request(float(i) / 10)
    assert b.allowed(1.0) == pytest.approx(2 + 5)
    assert [b.try_retry(1.0) for _ in range(8)] == [True] * 7 + [False]
    assert b.allowed(1.0) == pytest.approx(0)
    # 10 s later the requests and retries have left the window: only the floor is left
    assert b.allowed(11.5) == pytest.approx(2)


def test_a_retry_that_served_its_request_is_refunded() -> None:
    """A burst of 429s from chutes that were full while others had room: every retry served its
    request, so the budget is not spent (before the refund, the 3rd retry here was refused and
    its request got a 429 although another chute had room)."""
    b = RetryBudget(percent=0.0, min_per_second=0.2, window=10.0)  # 2 retries per 10 s
    for k in range(20):
        t = 1.0 + k / 100
        assert b.try_retry(t)
        b.refund(t)
    assert b.allowed(1.5) == pytest.approx(2)


def test_retries_that_fail_again_stay_charged_and_a_late_refund_is_harmless() -> None:
    b = RetryBudget(percent=0.0, min_per_second=0.2, window=10.0)
    assert b.try_retry(1.0) and b.try_retry(1.1)  # an outage: both retries failed again
    assert not b.try_retry(1.2)
    b.refund(5.0)  # a time no retry was recorded at: nothing changes
    assert not b.try_retry(1.3)
    b.refund(1.1)  # the second one served its request after all (a stream's first chunk)
    assert b.try_retry(1.4)
    b.refund(1.0)
    b.refund(1.0)  # refunding twice refunds once
    assert b.allowed(1.5) == pytest.approx(1)
    assert b.allowed(20.0) == pytest.approx(2)
    b.refund(1.4)  # already out of the window: a no-op
    assert b.allowed(20.0) == pytest.approx(2)


def test_a_negative_or_infinite_share_is_refused() -> None:
    with pytest.raises(ValueError):
        RetryBudget(percent=-0.1)
    with pytest.raises(ValueError):
        RetryBudget(percent=float("inf"))
