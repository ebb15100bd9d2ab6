"""The session benchmark's plan: the offered load it calibrates to, and the same sessions for
every strategy (pure: no processes)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import session_quality as sq  # noqa: E402

from benchmarks.workload.sessions import SessionWorkload  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("load", [0.6, 0.85])
def test_the_plan_offers_the_requested_load_and_is_the_same_every_time(load: float) -> None:
    w = SessionWorkload.named("minimax-m25", token_scale=1.0, output_scale=0.25, think_scale=0.1)
    a = sq.plan_sessions(w, 3, load, 150.0, 40.0)
    b = sq.plan_sessions(w, 3, load, 150.0, 40.0)
    assert [(s.key, s.start, s.turns) for s in a] == [(s.key, s.start, s.turns) for s in b]
    assert sq.offered_load(a, 150.0, 40.0, load) == pytest.approx(load, rel=0.05)
    assert all(0 <= s.start < 150.0 for s in a) and len(a) > 50


def test_load_counts_the_busier_resource_without_reuse() -> None:
    """Long prompts make prefill (one at a time per instance) bind before the slots: the load of
    the same sessions doubles when the prefill rate halves, but not that much through slots."""
    w = SessionWorkload.named("minimax-m25", token_scale=1.0, output_scale=0.25, think_scale=0.1)
    ss = sq.plan_sessions(w, 4, 0.6, 150.0, 40.0)
    base = sq.offered_load(ss, 150.0, 40.0, 0.6)
    old = sq.PREFILL_RATE
    try:
        sq.PREFILL_RATE = old / 2
        slower = sq.offered_load(ss, 150.0, 40.0, 0.6)
    finally:
        sq.PREFILL_RATE = old
    assert slower > 1.5 * base
