"""The session generator stays calibrated to the published Chutes figures (Nixon et al., PVLDB 2027;
data HarvardMadSys/chutes_workload, CC BY 4.0): every row of ``python -m benchmarks.workload.calibration``
within its stated tolerance, on a fixed seed and 20,000 sessions per profile (8 seeds pass; ~8 s)."""
from __future__ import annotations

import pytest

from benchmarks.workload.calibration import draw, rows, table
from benchmarks.workload.profiles import PROFILES

pytestmark = pytest.mark.unit

N, SEED = 20_000, 1


@pytest.fixture(scope="module", params=sorted(PROFILES))
def calibration(request):
    return request.param, rows(request.param, draw(request.param, N, SEED))


def test_every_published_figure_within_its_tolerance(calibration) -> None:
    name, rs = calibration
    misses = [r for r in rs if not r.ok]
    assert not misses, "\n" + "\n".join(table(name, misses))


def test_the_table_covers_the_calibration_targets(calibration) -> None:
    _, rs = calibration
    figures = {r.figure for r in rs}
    for f in ("first turns' share of input", "input repeating the session's prefix", "new tokens per follow-up, mean",
              "output tokens per request, mean", "sessions with no follow-up", "sessions reaching turn 10",
              "follow-ups that are concurrent sub-requests", "gaps under 1 s (agent loops), all follow-ups",
              "gaps over 1 h", "sessions opening with a common system prompt"):
        assert f in figures, f
    # every figure has a stated tolerance (the pool's exact bounds: none)
    assert all(r.tol > 0 or r.at_least or r.figure.startswith("common prompts") for r in rs)


def test_a_drifted_generator_misses() -> None:
    """The check has teeth: doubling the new tokens of every follow-up fails the token figures."""
    import dataclasses
    import random

    from benchmarks.workload.sessions import SessionWorkload
    name = "minimax-m25"
    p = PROFILES[name]
    drifted = dataclasses.replace(p, user=p.user.at(p.user.median * 2))
    w = SessionWorkload(drifted)
    rng = random.Random(SEED)
    bad = {r.figure for r in rows(name, [w.session(rng, i) for i in range(5_000)]) if not r.ok}
    assert {"new tokens per follow-up, mean", "mean input per request (tokens)"} <= bad
