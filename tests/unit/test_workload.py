"""The session workload reproduces the published Chutes figures and really resends its history."""
from __future__ import annotations

import random

import numpy as np
import pytest

from benchmarks.workload.figures import CHAINS, SAMPLES
from benchmarks.workload.profiles import CAP_BOOST, CONCURRENT_GAP_S, MIN_THINK_S, PROFILES, LogNormal, fit, targets
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
    assert outputs.mean() == pytest.approx(targets(name).output_mean, rel=0.05)
    assert prompts.max() <= PROFILES[name].max_prompt_tokens  # the context window holds every prompt
    for s in sessions[:2000]:  # prompt k+1 = prompt k + answer k (not a sub-request's) + new message k+1
        for a, b in zip(s.turns, s.turns[1:]):
            assert b.prompt_tokens == a.prompt_tokens + (0 if b.concurrent else a.output_tokens) + b.new_tokens
            # think times from under a second (sample clocks: 0.1 s floor) up; sub-requests within 1.32 s
            assert (0.001 <= b.think <= CONCURRENT_GAP_S) if b.concurrent else (b.think >= MIN_THINK_S)


def test_think_times_in_the_published_ranges() -> None:
    assert 60 < PROFILES["deepseek-v32"].think.median < 900  # gaps from ~30 s to over an hour
    assert 4 < PROFILES["minimax-m25"].think.median < 60  # gaps mostly 4-60 s


def test_calibration_reproduces_the_shipped_parameters() -> None:
    for name in ("deepseek-v32", "minimax-m25"):
        p = PROFILES[name]
        fresh = fit(name, boost=CAP_BOOST[name])
        assert fresh.first_median == pytest.approx(p.first_median, rel=1e-3)
        assert fresh.user.median == pytest.approx(p.user.median, rel=1e-3)
        assert fresh.beta == pytest.approx(p.beta, rel=1e-3)
        assert fresh.think == p.think and fresh.output == p.output and fresh.concurrent_gap == p.concurrent_gap


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
        # a common system prompt (if any) opens the system message, then the session's own header
        assert s.system_prompt()[s.shared_tokens * 4:].startswith(f"[session {s.key}]")
    own = [s for s in sessions if not s.shared_tokens]
    first = [chat_prompt(s.messages(0)) for s in own]
    assert len({f[:200] for f in first}) == len(first)  # no two of them share their first 50 tokens


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
    assert any(t.concurrent for s in sessions for t in s.turns)
    for s in sessions:
        assert sent[(s.index, 0)] == s.start
        for k in range(1, len(s.turns)):
            # a concurrent sub-request leaves its think after its parent's send, not after the answer
            wait = 0.0 if s.turns[k].concurrent else 3.0
            assert sent[(s.index, k)] == pytest.approx(sent[(s.index, k - 1)] + wait + s.turns[k].think)
    loop = ClientLoop([sessions[0]])
    t, s, turn = loop.pop()
    assert turn.index == 0 and len(loop) == 0
    nxt = loop.answered(s, 0, t + 1.0)
    assert (nxt is None) == (s.followups == 0 or s.turns[1].concurrent)


def test_a_concurrent_sub_request_resends_its_parent_prompt_without_the_answer() -> None:
    w = SessionWorkload.named("minimax-m25", token_scale=0.01)
    rng = random.Random(12)
    s = next(s for s in (w.session(rng, i) for i in range(400)) if any(t.concurrent for t in s.turns[1:]))
    k = next(k for k, t in enumerate(s.turns) if t.concurrent)
    parent, child = s.messages(k - 1), s.messages(k)
    assert child[:len(parent)] == parent and child[len(parent)]["role"] == "user"  # no assistant turn between
    assert len(child) == len(parent) + 1
    # sent before the parent's answer: the answers of turns 0..k-2 are enough
    answers = [f"answer {j}" for j in range(k - 1)]
    assert s.messages(k, answers)[-1] == child[-1]
    # and the next turn (if sequential) carries the sub-request's answer, so the chain stays a prefix chain
    if k + 1 < len(s.turns) and not s.turns[k + 1].concurrent:
        assert s.messages(k + 1)[:len(child)] == child and s.messages(k + 1)[len(child)]["role"] == "assistant"


def test_sessions_share_a_common_system_prompt_prefix() -> None:
    w = SessionWorkload.named("deepseek-v32")
    rng = random.Random(3)
    sessions = [w.session(rng, i) for i in range(400)]
    shared = [s for s in sessions if s.shared_tokens]
    assert 0.4 < len(shared) / len(sessions) < 0.6
    by_prompt: dict[str, list] = {}
    for s in shared:
        by_prompt.setdefault(s.shared_seed, []).append(s)
    a, b = next(v for v in by_prompt.values() if len(v) >= 2)[:2]
    n = min(a.shared_tokens, b.shared_tokens) * 4
    pa, pb = a.system_prompt(), b.system_prompt()
    assert pa[:n] == pb[:n] and n >= 4
    assert pa[a.shared_tokens * 4:].startswith(f"[session {a.key}]")  # nothing after the common part is shared
    assert all(s.shared_tokens <= s.turns[0].new_tokens for s in shared)
    sizes = PROFILES["deepseek-v32"].shared_sizes
    assert min(sizes) == 128 and max(sizes) == 26176 and len(set(sizes)) > 50
