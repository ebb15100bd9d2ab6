"""The gateway without LiteLLM: a scripted :class:`Sender` behind the same seam LiteLLM's router
sits behind, the real routing core (fake clock, seeded random source, recording metrics). It pins
who owns an attempt: the core chooses before anything is sent, the sender is asked for exactly
that deployment, every attempt is closed exactly once, with the one classifier's outcome."""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from chutes_lb.fleet import chutes_from_config
from chutes_lb.proxy.gateway import Gateway, UpstreamFailure
from chutes_lb.redact import MASK, Redactor
from chutes_lb.routing.core import RoutingConfig, RoutingCore
from chutes_lb.routing.metrics import RecordingMetrics
from chutes_lb.routing.retry import RetryBudget

pytestmark = pytest.mark.unit

IDS = ["aaaaaaaa-0000-5000-8000-000000000001", "bbbbbbbb-0000-5000-8000-000000000002", "cccccccc-0000-5000-8000-000000000003"]
CONFIG = {
    "model_list": [{"model_name": "g", "litellm_params": {"model": f"openai/test/c{i}"}, "model_info": {"id": cid, "concurrency": 4}}
                   for i, cid in enumerate(IDS)],
    "router_settings": {"num_retries": 3},
}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def upstream_error(name: str, status: int | None, message: str = "") -> Exception:
    exc = type(name, (Exception,), {})(message)
    exc.status_code = status  # type: ignore[attr-defined]
    return exc


class Usage:
    def __init__(self, prompt: int, completion: int, cached: int = 0) -> None:
        self.prompt_tokens, self.completion_tokens = prompt, completion
        self.prompt_tokens_details = {"cached_tokens": cached}


class Response:
    def __init__(self, usage: Usage | None = None) -> None:
        self.usage = usage


class Stream:
    """An upstream stream: yields its chunks, may fail after ``fail_after`` of them."""

    def __init__(self, chunks: list[Any], fail_after: int | None = None) -> None:
        self.chunks, self.fail_after, self.closed = chunks, fail_after, False
        self._i = 0

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> Any:
        if self.fail_after is not None and self._i >= self.fail_after:
            raise upstream_error("APIConnectionError", None, "Connection reset by peer")
        if self._i >= len(self.chunks):
            raise StopAsyncIteration
        self._i += 1
        return self.chunks[self._i - 1]

    async def aclose(self) -> None:
        self.closed = True


class ScriptedSender:
    """Answers each attempt from a script keyed by the deployment it is asked for: an exception
    to raise or a response to return (the last entry repeats); records every call."""

    def __init__(self, script: dict[str, list[Any]], default: Any = None) -> None:
        self.script, self.default = script, default
        self.calls: list[tuple[str, str, bool]] = []

    async def send(self, kind: str, deployment: str, params: dict[str, Any], *, stream: bool, call_id: str) -> Any:
        self.calls.append((kind, deployment, stream))
        queue = self.script.get(deployment)
        answer = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer


def make(sender: ScriptedSender, budget: RetryBudget | None = None) -> tuple[Gateway, RoutingCore, RecordingMetrics, Clock]:
    clock = Clock()
    metrics = RecordingMetrics()
    fleet = chutes_from_config(CONFIG)
    core = RoutingCore(fleet.deployments, RoutingConfig(strategy="headroom", affinity=False), metrics, clock=clock,
                       rng=random.Random(3))
    gw = Gateway(sender, core, fleet, budget or RetryBudget(percent=0.2), Redactor(("sk-secret",)), clock=clock)
    return gw, core, metrics, clock


def outcomes(metrics: RecordingMetrics, outcome: str) -> int:
    """Attempts closed with ``outcome``, on any chute."""
    return sum(n for key, n in metrics.counts.items() if key[0] == "upstream" and key[2] == outcome)


def settled(core: RoutingCore, metrics: RecordingMetrics) -> None:
    """Every attempt was closed: nothing open in the ledger, no in-flight count left."""
    assert len(core.ledger) == 0
    assert all(v == 0 for v in metrics.inflight.values()), metrics.inflight


def test_the_core_chooses_and_the_sender_is_asked_for_exactly_that_deployment() -> None:
    sender = ScriptedSender({}, default=Response(Usage(100, 20, 60)))
    gw, core, metrics, _ = make(sender)
    result = asyncio.run(gw.call("chat", "chat", "g", {"messages": []}))
    assert result.attempts == 1 and len(sender.calls) == 1
    kind, deployment, stream = sender.calls[0]
    assert (kind, stream) == ("chat", False) and deployment in IDS and result.chute_id == deployment
    assert metrics.total("upstream", core.label(deployment), "success") == 1
    assert metrics.total("decision") == 1
    settled(core, metrics)


def test_a_capacity_429_is_retried_on_another_chute_and_each_attempt_is_closed_once() -> None:
    sender = ScriptedSender({IDS[0]: [upstream_error("RateLimitError", 429, "Infrastructure is at maximum capacity")]},
                            default=Response())
    gw, core, metrics, _ = make(sender)
    results = [asyncio.run(gw.call("chat", "chat", "g", {})) for _ in range(12)]
    for r in results:
        assert r.chute_id != IDS[0]
    tried_first = [c for c in sender.calls if c[1] == IDS[0]]
    assert tried_first, "the first chute was never picked: the test proves nothing"
    assert metrics.total("upstream", core.label(IDS[0]), "rate_limited") == len(tried_first)
    assert outcomes(metrics, "success") == 12
    assert metrics.total("retry") == len(tried_first)
    settled(core, metrics)


def test_a_client_error_is_not_retried_and_keeps_its_status() -> None:
    sender = ScriptedSender({}, default=upstream_error("BadRequestError", 400, "Error code: 400 - {'detail': 'bad'}"))
    gw, core, metrics, _ = make(sender)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {}))
    assert info.value.status == 400 and len(sender.calls) == 1
    settled(core, metrics)


def test_every_chute_failing_costs_one_attempt_each_and_names_them() -> None:
    sender = ScriptedSender({}, default=upstream_error("ServiceUnavailableError", 503, "no instances sk-secret"))
    gw, core, metrics, _ = make(sender)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {}))
    assert info.value.status == 503
    assert sorted(d for _, d, _ in sender.calls) == sorted(IDS)  # each chute once, never one twice
    assert all(core.label(c) in info.value.message for c in IDS)
    assert "sk-secret" not in info.value.message
    assert outcomes(metrics, "error") == 3
    settled(core, metrics)


def test_the_retry_budget_stops_a_retry_storm() -> None:
    sender = ScriptedSender({}, default=upstream_error("InternalServerError", 500, "boom"))
    gw, core, metrics, _ = make(sender, RetryBudget(percent=0.0, min_per_second=0.1, window=10.0))  # 1 retry per 10 s
    for _ in range(3):
        with pytest.raises(UpstreamFailure):
            asyncio.run(gw.call("chat", "chat", "g", {}))
    assert len(sender.calls) == 3 + 1  # one retry in the window, then each request only its first attempt
    assert metrics.total("retry_refused") == 3  # the first request after its one retry, then each of the others
    settled(core, metrics)


def test_a_stream_is_closed_once_at_its_end_with_its_usage_and_ttft() -> None:
    chunks = [{"n": 1}, {"n": 2}, type("Last", (), {"usage": Usage(50, 7)})()]
    sender = ScriptedSender({}, default=lambda: Stream(list(chunks)))
    gw, core, metrics, clock = make(sender)

    async def scenario() -> list[Any]:
        result = await gw.call("chat", "chat", "g", {}, stream=True)
        assert result.stream is not None and len(core.ledger) == 1  # open while the client reads it
        clock.t += 1.0
        return [c async for c in result.stream]

    out = asyncio.run(scenario())
    assert len(out) == 3
    assert outcomes(metrics, "success") == 1
    settled(core, metrics)
    assert metrics.total("prompt_tokens", "chat") == 50  # the usage the last chunk reported reached the close
    assert [t for _, t in metrics.ttfts] == [0.0]  # the first chunk came at once (the fake clock moved after it)


def test_a_client_that_leaves_mid_stream_cancels_the_attempt_and_closes_the_upstream() -> None:
    upstream = Stream([{"n": i} for i in range(5)])
    sender = ScriptedSender({}, default=upstream)
    gw, core, metrics, _ = make(sender)

    async def scenario() -> None:
        result = await gw.call("chat", "chat", "g", {}, stream=True)
        assert result.stream is not None
        it = result.stream.__aiter__()
        await it.__anext__()
        await result.stream.aclose()

    asyncio.run(scenario())
    assert upstream.closed
    assert outcomes(metrics, "cancelled") == 1
    settled(core, metrics)


def test_an_error_mid_stream_closes_the_attempt_with_its_outcome_and_reaches_the_api_layer() -> None:
    sender = ScriptedSender({}, default=lambda: Stream([{"n": 1}, {"n": 2}], fail_after=1))
    gw, core, metrics, _ = make(sender)

    async def scenario() -> None:
        result = await gw.call("chat", "chat", "g", {}, stream=True)
        assert result.stream is not None
        with pytest.raises(Exception, match="Connection reset"):
            async for _ in result.stream:
                pass

    asyncio.run(scenario())
    assert outcomes(metrics, "error") == 1
    settled(core, metrics)


def test_a_stream_that_fails_before_its_first_chunk_is_retried_elsewhere() -> None:
    sender = ScriptedSender({IDS[1]: [lambda: Stream([], fail_after=0)]}, default=lambda: Stream([{"n": 1}]))
    gw, core, metrics, _ = make(sender)
    for _ in range(10):
        result = asyncio.run(gw.call("chat", "chat", "g", {}, stream=True))
        assert result.chute_id != IDS[1]

        async def drain(stream: Any) -> None:
            async for _ in stream:
                pass

        asyncio.run(drain(result.stream))
    assert any(d == IDS[1] for _, d, _ in sender.calls), "the failing chute was never picked"
    settled(core, metrics)


def test_every_429_and_503_it_sends_says_when_to_come_back() -> None:
    full = ScriptedSender({}, default=upstream_error("RateLimitError", 429, "Error code: 429 - {'detail': 'infra_overload'}"))
    gw, core, metrics, _ = make(full)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {}))
    assert info.value.status == 429 and info.value.retry_after is not None and 1 <= info.value.retry_after <= 60
    cold = ScriptedSender({}, default=upstream_error("ServiceUnavailableError", 503, "{'detail': 'No instances available (yet)'}"))
    gw, core, metrics, _ = make(cold)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {}))
    assert info.value.status == 503 and info.value.retry_after is not None


def test_an_upstream_retry_after_is_passed_on() -> None:
    exc = upstream_error("RateLimitError", 429, "Error code: 429 - {'detail': 'infra_overload'}")
    exc.response = type("R", (), {"headers": {"retry-after": "17"}})()  # type: ignore[attr-defined]
    gw, core, metrics, _ = make(ScriptedSender({}, default=exc))
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {}))
    assert info.value.retry_after == 17.0


def test_the_account_s_402_costs_one_attempt_and_holds_nothing() -> None:
    body = "Error code: 402 - {'detail': 'Quota exceeded and account balance is $0.0', 'quota_reset_timestamp': '2026-12-09T00:00:00Z'}"
    sender = ScriptedSender({}, default=upstream_error("APIStatusError", 402, body))
    gw, core, metrics, _ = make(sender)
    for _ in range(5):
        with pytest.raises(UpstreamFailure) as info:
            asyncio.run(gw.call("chat", "chat", "g", {}))
        assert info.value.status == 402
        assert "Quota exceeded and account balance is $0.0 (quota_reset_timestamp: 2026-12-09T00:00:00Z)" in info.value.message
    assert len(sender.calls) == 5  # one attempt each: another chute would refuse it too
    assert all(not core.penalty_active(c) and core.live.chute(c).error_score == 0.0 for c in IDS)  # nothing cooled or held
    settled(core, metrics)


def test_a_maintenance_429_is_tried_elsewhere_and_holds_that_chute() -> None:
    sender = ScriptedSender({IDS[0]: [upstream_error("RateLimitError", 429, "{'detail': 'model is under maintenance'}")]},
                            default=Response())
    gw, core, metrics, clock = make(sender)
    for _ in range(8):
        assert asyncio.run(gw.call("chat", "chat", "g", {})).chute_id != IDS[0]
    if any(d == IDS[0] for _, d, _ in sender.calls):
        assert core.penalty_active(IDS[0])
        clock.t += 60  # a capacity 429's hold would be long over; maintenance holds on
        assert core.penalty_active(IDS[0])


def test_the_upstream_message_reaches_the_client_whole_and_redacted() -> None:
    long = "Please reduce the length of the messages or completion. " * 3 + "key sk-secret"
    sender = ScriptedSender({}, default=upstream_error("BadRequestError", 400, f"litellm.BadRequestError: OpenAIException - Error code: 400 - {{'detail': {long!r}}}"))
    gw, core, metrics, _ = make(sender)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {}))
    message = info.value.message
    assert long.replace("sk-secret", MASK) in message  # whole, not cut mid-word
    assert "sk-secret" not in message and "{'detail'" not in message and "OpenAIException" not in message


WINDOWS = {IDS[0]: 8192, IDS[1]: 131072, IDS[2]: 163840}


def make_windows(sender: ScriptedSender, features: dict[str, list[str]] | None = None) -> tuple[Gateway, RoutingCore, RecordingMetrics, Clock]:
    config = {**CONFIG, "model_list": [
        {**e, "model_info": {**e["model_info"], "max_model_len": WINDOWS[e["model_info"]["id"]],
                             **({"supported_features": features[e["model_info"]["id"]]} if features else {})}}
        for e in CONFIG["model_list"]]}
    clock = Clock()
    metrics = RecordingMetrics()
    fleet = chutes_from_config(config)
    core = RoutingCore(fleet.deployments, RoutingConfig(strategy="headroom", affinity=False), metrics, clock=clock,
                       rng=random.Random(3))
    return Gateway(sender, core, fleet, RetryBudget(percent=0.2), Redactor(()), clock=clock), core, metrics, clock


def long_prompt(tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": "word " * (tokens * 4 // 5)}]}


def test_a_long_prompt_never_goes_to_a_chute_whose_window_is_too_small() -> None:
    sender = ScriptedSender({}, default=Response())
    gw, core, metrics, _ = make_windows(sender)
    for _ in range(20):
        assert asyncio.run(gw.call("chat", "chat", "g", long_prompt(17_000))).chute_id != IDS[0]
    assert all(d != IDS[0] for _, d, _ in sender.calls)
    settled(core, metrics)


def test_a_request_too_long_for_every_window_is_one_clear_400_without_trying_a_chute() -> None:
    sender = ScriptedSender({}, default=Response())
    gw, core, metrics, _ = make_windows(sender)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {**long_prompt(1000), "max_tokens": 200_000}))
    assert info.value.status == 400 and "163840" in info.value.message and sender.calls == []


def test_a_context_400_is_retried_once_on_a_larger_window_and_holds_nothing() -> None:
    too_long = upstream_error("BadRequestError", 400, "This model's maximum context length is 131072 tokens. However, you requested")
    sender = ScriptedSender({IDS[1]: [too_long]}, default=Response())
    gw, core, metrics, _ = make_windows(sender)
    for _ in range(12):
        result = asyncio.run(gw.call("chat", "chat", "g", long_prompt(5_000)))
        assert result.chute_id != IDS[1]
    refused = [c for c in sender.calls if c[1] == IDS[1]]
    assert refused, "the chute that refuses was never picked: the test proves nothing"
    assert all(d == IDS[2] for (_, d, _), prev in zip(sender.calls[1:], sender.calls) if prev[1] == IDS[1])
    assert core.live.chute(IDS[1]).error_score == 0.0 and not core.penalty_active(IDS[1])
    settled(core, metrics)


def test_tools_go_only_to_chutes_that_support_them() -> None:
    sender = ScriptedSender({}, default=Response())
    gw, core, metrics, _ = make_windows(sender, {IDS[0]: ["json_mode"], IDS[1]: ["tools", "json_mode"], IDS[2]: ["tools"]})
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for _ in range(12):
        assert asyncio.run(gw.call("chat", "chat", "g", {"messages": [], "tools": tools})).chute_id != IDS[0]
    both = {"messages": [], "tools": tools, "response_format": {"type": "json_object"}}
    assert asyncio.run(gw.call("chat", "chat", "g", both)).chute_id == IDS[1]  # the one chute with both
    calls = len(sender.calls)
    with pytest.raises(UpstreamFailure) as info:
        asyncio.run(gw.call("chat", "chat", "g", {"messages": [], "reasoning_effort": "high"}))
    assert info.value.status == 400 and "supports reasoning" in info.value.message and len(sender.calls) == calls


def fill(core: RoutingCore, n: int) -> list:
    """``n`` attempts open (by other requests of this worker): with no snapshot each chute has
    its concurrency (4) as slots, so 12 fill the fleet."""
    from chutes_lb.routing.attempts import UpstreamCall

    calls = []
    for i in range(n):
        c = UpstreamCall(core, f"other-{i}")
        c.open(IDS)
        calls.append(c)
    return calls


def make_waiting(sender: ScriptedSender, bound: float) -> tuple[Gateway, RoutingCore, RecordingMetrics]:
    from chutes_lb.proxy.slotwait import SlotWait

    gw, core, metrics, _ = make(sender)
    gw = Gateway(sender, core, gw.fleet, RetryBudget(percent=0.2), Redactor(()), clock=gw.clock, slot_wait=SlotWait(bound, metrics))
    return gw, core, metrics


def test_a_request_finding_every_chute_full_waits_and_goes_when_a_slot_frees() -> None:
    sender = ScriptedSender({}, default=Response())
    gw, core, metrics = make_waiting(sender, bound=5.0)
    others = fill(core, 12)
    assert core.with_room(gw._deployments["g"]) == ()

    async def scenario() -> None:
        task = asyncio.create_task(gw.call("chat", "chat", "g", {}))
        await asyncio.sleep(0.2)
        assert sender.calls == [] and len(gw.slot_wait) == 1  # held, not sent to a full chute
        freed = others[0].close("success")
        result = await asyncio.wait_for(task, 2.0)
        assert result.chute_id == freed and len(sender.calls) == 1 and len(gw.slot_wait) == 0  # it took the slot that freed

    asyncio.run(scenario())
    assert metrics.counts[("slot_waited", "slot")] == 1 and metrics.gauges[("slot_waiting", "")] == 0


def test_the_wait_is_bounded_then_the_request_is_sent_anyway() -> None:
    sender = ScriptedSender({}, default=Response())
    gw, core, metrics = make_waiting(sender, bound=0.3)
    fill(core, 12)

    async def scenario() -> float:
        t0 = time.monotonic()
        await gw.call("chat", "chat", "g", {})
        return time.monotonic() - t0

    waited = asyncio.run(scenario())
    assert 0.25 <= waited < 2.0 and len(sender.calls) == 1
    assert metrics.counts[("slot_waited", "timeout")] == 1


def test_waiters_go_first_come_first_served() -> None:
    gate = asyncio.Event()
    order: list[str] = []

    class HoldingSender(ScriptedSender):
        async def send(self, kind: str, deployment: str, params: dict[str, Any], *, stream: bool, call_id: str) -> Any:
            task = asyncio.current_task()
            order.append(task.get_name() if task else "?")
            await gate.wait()  # served requests keep their slot until the test lets them go
            return Response()

    gw, core, metrics = make_waiting(HoldingSender({}), bound=5.0)
    others = fill(core, 12)

    async def scenario() -> None:
        first = asyncio.create_task(gw.call("chat", "chat", "g", {}), name="first")
        await asyncio.sleep(0.05)
        second = asyncio.create_task(gw.call("chat", "chat", "g", {}), name="second")
        await asyncio.sleep(0.1)
        assert order == [] and len(gw.slot_wait) == 2
        others[0].close("success")
        await asyncio.sleep(0.1)
        assert order == ["first"] and len(gw.slot_wait) == 1  # one slot: the older waiter took it
        others[1].close("success")
        await asyncio.sleep(0.1)
        assert order == ["first", "second"]
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 2.0)

    asyncio.run(scenario())
