"""The session workload reproduces the published Chutes figures and really resends its history."""
from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks.workload.figures import CHAINS, SAMPLES
from benchmarks.workload.profiles import MINIMAX_OUTPUT_MEAN, PROFILES, LogNormal, calibrate, fit
from benchmarks.workload.sessions import ClientLoop, SessionWorkload, make_text, replay, session_rate
from chutes_lb.simulator.prompt import chat_prompt, tokens_of

pytestmark = pytest.mark.unit

N = 40_000


@pytest.fixture(scope="module", params=sorted(PROFILES))
def drawn(request):
    w = SessionWorkload(PROFILES[request.param])
    rng = random.Random(2027)
    return request.param, [w.session(rng, i) for i in range(N)]


def test_figures_transcribed_consistently() -> None:
    for name, c in CHAINS.items():
        assert c.sessions == c.turn_id_histogram[0]
        assert c.requests == c.sessions + c.linked_turns
        assert sum(c.turn_id_histogram) < c.requests  # the tail beyond turn 19 is not in the histogram
    assert [len(s) for s in SAMPLES["deepseek-v32"]] == [1, 1, 1, 2, 2, 2, 6, 6, 6, 15, 15, 11]
    assert [len(s) for s in SAMPLES["minimax-m25"]] == [1, 1, 1, 4, 3, 2, 5, 7, 6, 23, 15, 20]


def test_followup_distribution_matches_the_chain_summary(drawn) -> None:
    name, sessions = drawn
    c = CHAINS[name]
    f = np.array([s.followups for s in sessions])
    assert np.mean(f == 0) == pytest.approx(c.length_0_fraction, abs=0.01)
    assert np.percentile(f, 50) == c.followups_median
    assert np.percentile(f, 90) == c.followups_p90
    assert np.percentile(f, 99) == c.followups_p99
    assert f.mean() == pytest.approx(c.followups_mean, rel=0.04)
    requests = f.sum() + len(f)
    assert f.sum() / requests == pytest.approx(c.linked_turns / c.requests, abs=0.01)
    for k in range(1, 11):  # the turn-id histogram, as shares of sessions reaching turn k
        assert np.mean(f >= k) == pytest.approx(c.turn_id_histogram[k] / c.sessions, abs=0.01), k


def test_input_growth_and_outputs_match(drawn) -> None:
    name, sessions = drawn
    c = CHAINS[name]
    turns = [t for s in sessions for t in s.turns]
    prompts = np.array([t.prompt_tokens for t in turns], dtype=float)
    repeated = sum(t.prompt_tokens - t.new_tokens for s in sessions for t in s.turns[1:])
    assert prompts.mean() == pytest.approx(c.mean_input_tokens, rel=0.05)
    assert repeated / prompts.sum() == pytest.approx(c.reuse_ratio, abs=0.02)
    outputs = np.array([t.output_tokens for t in turns], dtype=float)
    if name == "minimax-m25":
        assert outputs.mean() == pytest.approx(MINIMAX_OUTPUT_MEAN, rel=0.05)
    for s in sessions[:2000]:  # prompt k+1 = prompt k + answer k + new message k+1
        for a, b in zip(s.turns, s.turns[1:]):
            assert b.prompt_tokens == a.prompt_tokens + a.output_tokens + b.new_tokens
            assert b.think >= 1.0


def test_think_times_in_the_published_ranges() -> None:
    assert 60 < PROFILES["deepseek-v32"].think.median < 900  # gaps from ~30 s to over an hour
    assert 4 < PROFILES["minimax-m25"].think.median < 60  # gaps mostly 4-60 s


def test_calibration_reproduces_the_shipped_parameters() -> None:
    for name, out_mean in (("deepseek-v32", None), ("minimax-m25", MINIMAX_OUTPUT_MEAN)):
        p = PROFILES[name]
        fresh = fit(name, out_mean)
        assert fresh.first_median == pytest.approx(p.first_median, rel=1e-3)
        assert fresh.first_beta == pytest.approx(p.first_beta, rel=1e-3)
        assert fresh.user == p.user and fresh.think == p.think


def test_clipped_lognormal_mean() -> None:
    rng = random.Random(1)
    d = LogNormal(100.0, 1.5, 5.0, 2000.0)
    assert np.mean([d.sample(rng) for _ in range(200_000)]) == pytest.approx(d.mean, rel=0.02)
    assert LogNormal(3.0, 0.0).mean == 3.0


def test_prompts_of_a_session_share_their_prefix_exactly() -> None:
    w = SessionWorkload.named("minimax-m25", token_scale=0.01)
    rng = random.Random(5)
    sessions = [s for s in (w.session(rng, i) for i in range(60)) if s.followups >= 3][:5]
    assert sessions
    for s in sessions:
        prev = b""
        for k, turn in enumerate(s.turns):
            data = chat_prompt(s.messages(k))
            assert data.startswith(prev)
            # the simulator counts a few bytes per message for the role and separators
            assert 0 <= tokens_of(data) - turn.prompt_tokens <= 3 * (2 * k + 2)  # <= 11 bytes per message
            prev = data
        # with the real answers in place of the stand-ins, the prefix property still holds
        answers = [f"answer {j} " * 7 for j in range(len(s.turns))]
        a1, a2 = chat_prompt(s.messages(1, answers[:1])), chat_prompt(s.messages(2, answers[:2]))
        assert a2.startswith(a1)
        assert s.system_prompt().startswith(f"[session {s.key}]")
    first = [chat_prompt(s.messages(0)) for s in sessions]
    assert len({f[:200] for f in first}) == len(first)  # no two sessions share their first 50 tokens


def test_same_seed_same_plan_and_text() -> None:
    w = SessionWorkload.named("deepseek-v32")
    a = list(w.sessions(random.Random(9), rate=0.5, n=300))
    b = list(w.sessions(random.Random(9), rate=0.5, n=300))
    c = list(w.sessions(random.Random(10), rate=0.5, n=300))
    assert a == b and a != c
    assert a[7].new_message(0) == b[7].new_message(0)
    assert len({s.key for s in a}) == len(a)
    assert make_text("x", 1000) == make_text("x", 1000) != make_text("y", 1000)
    assert len(make_text("x", 1001)) == 1001


def test_token_scale_shrinks_prompts() -> None:
    full = SessionWorkload.named("minimax-m25")
    small = SessionWorkload.named("minimax-m25", token_scale=0.01, output_scale=0.1, think_scale=0.0)
    a, b = full.session(random.Random(3), 0), small.session(random.Random(3), 0)
    assert a.followups == b.followups
    assert b.turns[0].prompt_tokens == pytest.approx(a.turns[0].prompt_tokens * 0.01, abs=16)
    assert all(t.think == 0.0 for t in b.turns)


def test_arrivals_are_poisson_at_the_rate() -> None:
    w = SessionWorkload.named("minimax-m25")
    starts = np.array([s.start for s in w.sessions(random.Random(4), rate=2.0, n=20_000)])
    gaps = np.diff(starts)
    assert gaps.mean() == pytest.approx(0.5, rel=0.03)
    assert gaps.std() == pytest.approx(0.5, rel=0.05)  # exponential: sd = mean
    rate = session_rate(0.6, slots=100, mean_service_s=10.0, mean_turns=4.0)
    assert rate == pytest.approx(1.5)  # 1.5 sessions/s x 4 turns x 10 s = 60 busy slots


def test_closed_loop_waits_for_the_answer_plus_think() -> None:
    w = SessionWorkload.named("minimax-m25", token_scale=0.01)
    sessions = [s for s in w.sessions(random.Random(8), rate=0.1, n=50)]
    events = list(replay(sessions, response_time=lambda s, t: 3.0))
    assert len(events) == sum(len(s.turns) for s in sessions)
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    sent = {(s.index, t.index): at for at, s, t in events}
    for s in sessions:
        assert sent[(s.index, 0)] == s.start
        for k in range(1, len(s.turns)):
            assert sent[(s.index, k)] == pytest.approx(sent[(s.index, k - 1)] + 3.0 + s.turns[k].think)
    loop = ClientLoop([sessions[0]])
    t, s, turn = loop.pop()
    assert turn.index == 0 and len(loop) == 0
    nxt = loop.answered(s, 0, t + 1.0)
    assert (nxt is None) == (s.followups == 0)
