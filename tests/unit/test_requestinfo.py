from datetime import datetime, timedelta

import pytest

from chutes_lb.routing.attempts import completion_tokens
from chutes_lb.routing.requestinfo import attempt_key, failed_ids_in_request, last_failed_in_request, ttft_seconds
from chutes_lb.routing.retry import classify

pytestmark = pytest.mark.unit


def test_failed_ids_come_from_every_place_litellm_records_them():
    kwargs = {
        "_excluded_deployment_ids": ["a"],
        "_retry_skipped_deployment_ids": ("b",),
        "metadata": {"_failover_excluded_ids": ["c"], "previous_models": [{"deployment_id": "d"}, {"deployment_id": None}, "junk"]},
        "litellm_metadata": {"previous_models": [{"deployment_id": "e"}]},
    }
    assert failed_ids_in_request(kwargs) == {"a", "b", "c", "d", "e"}
    assert last_failed_in_request(kwargs) == "d"


@pytest.mark.parametrize("kwargs", [None, {}, {"metadata": "x"}, {"metadata": {"previous_models": "x"}}, {"_excluded_deployment_ids": 5}])
def test_missing_or_malformed_fields_mean_nothing_failed(kwargs):
    assert failed_ids_in_request(kwargs) == frozenset()
    assert last_failed_in_request(kwargs) is None


def test_attempt_key_reads_call_id_and_deployment():
    assert attempt_key({"litellm_call_id": "c1", "litellm_params": {"model_info": {"id": "dep"}}}) == ("c1", "dep")
    assert attempt_key({"litellm_call_id": "c1", "standard_logging_object": {"model_id": "dep2"}}) == ("c1", "dep2")
    assert attempt_key({"litellm_params": {"model_info": {"id": "dep"}}}) is None


class _Err(Exception):
    def __init__(self, status):
        self.status_code = status


class RateLimitError(Exception):
    pass


class Timeout(Exception):
    pass


@pytest.mark.parametrize("exc,outcome", [(_Err(429), "rate_limited"), (RateLimitError(), "rate_limited"), (_Err(408), "timeout"),
                                         (Timeout(), "timeout"), (_Err(503), "error"), (None, "error")])
def test_failures_are_classified_by_the_one_classifier(exc, outcome):
    assert classify(exc).outcome == outcome


def test_ttft_only_for_streams():
    start = datetime(2026, 1, 1)
    first = start + timedelta(seconds=0.25)
    assert ttft_seconds({"stream": True, "completion_start_time": first}, start) == pytest.approx(0.25)
    assert ttft_seconds({"stream": False, "completion_start_time": first}, start) is None
    assert ttft_seconds({"stream": True, "completion_start_time": start - timedelta(seconds=1)}, start) is None


def test_failure_kinds_come_from_the_retry_breadcrumbs():
    from chutes_lb.routing.requestinfo import failure_kinds_in_request

    kwargs = {"metadata": {"previous_models": [
        {"deployment_id": "a", "exception_type": "RateLimitError"}, {"deployment_id": "b", "exception_type": "Timeout"},
        {"deployment_id": "c", "exception_type": "ServiceUnavailableError"}, {"deployment_id": "a", "exception_type": "APIError"}, "junk"]}}
    assert failure_kinds_in_request(kwargs) == {"a": "error", "b": "timeout", "c": "error"}
    assert failure_kinds_in_request(None) == {}


def test_completion_tokens_from_the_response_usage() -> None:
    from litellm import ModelResponse

    resp = ModelResponse(choices=[{"message": {"role": "assistant", "content": "hi"}}],
                         usage={"prompt_tokens": 5, "completion_tokens": 42, "total_tokens": 47})
    assert completion_tokens(resp) == 42.0
    assert completion_tokens({"usage": {"completion_tokens": 7}}) == 7.0
    for unknown in (None, {}, {"usage": None}, {"usage": {"completion_tokens": 0}},
                    {"usage": {"completion_tokens": "12"}}, {"usage": {"completion_tokens": True}}, object()):
        assert completion_tokens(unknown) is None
