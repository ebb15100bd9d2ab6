"""The calibration table: the generator's sessions against the published Chutes figures.

``python -m benchmarks.workload.calibration --sessions 20000 --seed 1`` prints, per profile, each
figure drawn vs published, the tolerance and PASS/MISS; ``tests/unit/test_workload_calibration.py``
fails on a MISS. Published figures: Nixon et al., PVLDB 2027, data ``HarvardMadSys/chutes_workload``
(CC BY 4.0); see :mod:`.figures` for the files.
"""
from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass

from benchmarks.workload.figures import CHAINS
from benchmarks.workload.profiles import (CONCURRENT_GAP_S, PROFILES, RESPONSE_BASE_S, RESPONSE_TPS, _published,
                                          targets)
from benchmarks.workload.sessions import Session, SessionWorkload

__all__ = ["Row", "draw", "rows", "table", "main"]


@dataclass(frozen=True)
class Row:
    figure: str
    drawn: float
    published: float
    tol: float  # allowed |drawn - published|, in the figure's unit (``rel``: a share of the published)
    rel: bool = False
    at_least: bool = False  # passes when drawn >= published (a floor, not a target)
    fmt: str = "{:,.0f}"
    source: str = ""

    @property
    def ok(self) -> bool:
        if self.at_least:
            return self.drawn >= self.published
        return abs(self.drawn - self.published) <= (self.tol * abs(self.published) if self.rel else self.tol)

    def cells(self) -> list[str]:
        if self.at_least:
            tol = "floor"
        elif self.rel:
            tol = f"±{self.tol:.0%}"
        else:
            tol = f"±{self.tol * 100:.1f} pts" if self.fmt.endswith("%}") else "±" + self.fmt.format(self.tol)
        return [self.figure, self.fmt.format(self.drawn), self.fmt.format(self.published), tol,
                "PASS" if self.ok else "MISS", self.source]


def draw(name: str, n: int, seed: int) -> list[Session]:
    w = SessionWorkload.named(name)
    rng = random.Random(seed)
    return [w.session(rng, i) for i in range(n)]


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rows(name: str, sessions: list[Session]) -> list[Row]:
    """The calibration rows of ``sessions`` drawn from profile ``name`` at token/output/think scale 1."""
    c, t, p = CHAINS[name], targets(name), PROFILES[name]
    turns = [x for s in sessions for x in s.turns]
    follow = [x for s in sessions for x in s.turns[1:]]
    total = sum(x.prompt_tokens for x in turns)
    first = sum(s.turns[0].prompt_tokens for s in sessions)
    repeated = sum(x.prompt_tokens - x.new_tokens for x in follow)
    new = [x.new_tokens for x in follow]
    f = [s.followups for s in sessions]
    pct = "{:.1%}"
    src_chain, src_fig20 = "chain_summary", "figure20_sweep.csv"
    out = [
        Row("first turns' share of input", first / total, t.first_share, 0.015, fmt=pct,
            source="cachesim.json working set"),
        Row("mean first prompt (tokens)", first / len(sessions), t.first_mean, 0.06, rel=True, source="cachesim.json"),
        Row("input repeating the session's prefix", repeated / total, t.reuse, 0.015, fmt=pct, source=src_chain),
        Row("new tokens per follow-up, mean", statistics.fmean(new), t.new_mean, 0.08, rel=True,
            source="(input - repeated - first) / follow-ups"),
        Row("mean input per request (tokens)", total / len(turns), t.input_mean, 0.06, rel=True, source=src_chain),
        Row("output tokens per request, mean", statistics.fmean(x.output_tokens for x in turns), t.output_mean, 0.03,
            rel=True, source=src_fig20),
        Row("sessions with no follow-up", sum(x == 0 for x in f) / len(f), c.length_0_fraction, 0.01, fmt=pct,
            source=src_chain),
        Row("requests that are follow-ups", len(follow) / len(turns), c.linked_turns / c.requests, 0.01, fmt=pct,
            source=src_chain),
        Row("follow-ups per session, mean", statistics.fmean(f), c.followups_mean, 0.05, rel=True, fmt="{:.2f}",
            source=src_chain),
    ]
    for k in range(1, 11):
        out.append(Row(f"sessions reaching turn {k}", sum(x >= k for x in f) / len(f),
                       c.turn_id_histogram[k] / c.sessions, 0.01, fmt=pct, source="turn-id histogram"))
    # heavy tails and the rest: published as ranges or small samples, so looser tolerances
    out.append(Row("new tokens per follow-up, mean / median (heavy tail)", statistics.fmean(new) / _q(new, 0.5), 2.0,
                   0.0, at_least=True, fmt="{:.1f}", source="at least 2 (samples: jumps of 10-57k among ~0.2-5k)"))
    # gaps start to start, as published: a sub-request's delay, or the parent's response time (modelled
    # as in profiles.py: RESPONSE_BASE_S + output / RESPONSE_TPS) plus the think time
    gaps = [(x.concurrent, x.think + (0.0 if x.concurrent else RESPONSE_BASE_S + prev.output_tokens / RESPONSE_TPS))
            for s in sessions for prev, x in zip(s.turns, s.turns[1:])]
    gen_seq = [g for conc, g in gaps if not conc]
    pub_pairs = [(a, b) for s in _published(name) for a, b in zip(s, s[1:])]
    pub_seq = [b[0] for a, b in pub_pairs if b[0] > CONCURRENT_GAP_S]
    pub_conc = [b[0] for a, b in pub_pairs if b[0] <= CONCURRENT_GAP_S]
    conc = [x for x in follow if x.concurrent]
    out += [
        Row("follow-ups that are concurrent sub-requests", len(conc) / len(follow), p.concurrent_share, 0.01, fmt=pct,
            source=f"samples + excerpts: {len(pub_conc)} of {len(pub_pairs)} start <= 1.32 s after the parent"),
        Row("their delay after the parent's start, median (s)", _q([x.think for x in conc], 0.5),
            _q(pub_conc, 0.5), 0.5, rel=True, fmt="{:.3f}",
            source="excerpts: 0.0008-1.314 s"),
        Row("gap between sequential turns, median (s)", _q(gen_seq, 0.5), _q(pub_seq, 0.5), 0.5, rel=True,
            fmt="{:,.1f}",
            source=f"samples + excerpts ({len(pub_seq)} gaps)"),
        Row("gap between sequential turns, p90 (s)", _q(gen_seq, 0.9), _q(pub_seq, 0.9), 0.6, rel=True, fmt="{:,.0f}",
            source="samples + excerpts"),
        Row("gaps under 1 s (agent loops), all follow-ups", sum(g < 1.0 for _, g in gaps) / len(gaps),
            sum(b[0] < 1.0 for a, b in pub_pairs) / len(pub_pairs), 0.05, fmt=pct, source="samples + excerpts"),
        Row("gaps over 1 h", sum(g > 3600 for _, g in gaps) / len(gaps),
            sum(b[0] > 3600 for a, b in pub_pairs) / len(pub_pairs), 0.04, fmt=pct,
            source="samples (max 3.4 h): 1 of 70 / 0 of 76, 95% interval up to 7.7% / 4.7%"),
        Row("sessions opening with a common system prompt", sum(s.shared_tokens > 0 for s in sessions) / len(sessions),
            p.shared_share, 0.03, fmt=pct, source="first turns with cached tokens (8 of 16)"),
    ]
    sizes = p.shared_sizes
    out += [Row("common prompts, smallest (tokens)", min(sizes), p.shared_lo, 0,
                source="smallest cached first-turn prefix"),
            Row("common prompts, largest (tokens)", max(sizes), p.shared_hi, 0, source="largest one")]
    return out


def table(name: str, rs: list[Row]) -> list[str]:
    lines = [f"| {name}: figure | drawn | published | tolerance | | source |", "|---|---|---|---|---|---|"]
    return lines + ["| " + " | ".join(r.cells()) + " |" for r in rs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", choices=sorted(PROFILES), action="append")
    a = ap.parse_args(argv)
    misses = 0
    for name in a.profile or sorted(PROFILES):
        rs = rows(name, draw(name, a.sessions, a.seed))
        misses += sum(not r.ok for r in rs)
        print("\n".join(table(name, rs)) + "\n")
    print(f"{a.sessions} sessions per profile, seed {a.seed}: {misses} MISS")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
