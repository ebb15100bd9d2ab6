"""Session profiles of two Chutes chutes, derived from the published figures in :mod:`.figures`.

A profile says how a session is drawn (:mod:`.sessions` does the drawing):

- **follow-ups** F: ``P(F >= k)`` = turn-id histogram[k] / histogram[0] for k <= 19 (exact: a
  session has a turn k iff it has at least k follow-ups); beyond 19 a geometric tail whose ratio
  makes the expected number of requests per session equal the published requests / sessions,
  capped at the published maximum;
- **first prompt** P0 ~ lognormal with median ``first_median x (1 + F)^-first_beta``: sessions
  that will last longer start smaller. The published aggregates demand this: if every follow-up
  resends the whole history and the first prompt did not depend on F, at least 1 - 1/(requests
  per session) of the input would repeat an earlier prefix (65.6% DeepSeek-V3.2, 74.4%
  MiniMax-M2.5), but the chain summaries measure 54.8% and 64.2%. The DeepSeek-V3.2 samples show
  the same (26k tokens single-turn, 1-2k tokens at the start of 10+-turn sessions).
  ``first_median`` and ``first_beta`` are solved (:func:`calibrate`) so that the mean input per
  request and the repeated share both equal the chain summaries; the sigma is the samples';
- **new user message** U per follow-up (tool results, user text), **output** O and **think
  time** ~ lognormal, medians and sigmas fitted to the published sample sessions: U = input of
  turn k+1 - input of turn k - output of turn k (never negative in the samples: the history is
  always resent); think = start-to-start gap - an assumed response time of
  ``RESPONSE_BASE_S + output / RESPONSE_TPS`` (the samples carry no completion time), at least
  1 s. MiniMax-M2.5's output median is set so that the mean is the published ~272 tokens
  (1.15 G / 4.22 M); DeepSeek-V3.2 has no published output mean and keeps the samples' fit.

"Repeated share" here is the tokens of a follow-up that repeat the previous turn's prompt and
answer (prompt k = prompt k-1 + answer k-1 + U k), over all input tokens.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import cached_property

from benchmarks.workload.figures import CHAINS, SAMPLES, ChainSummary

__all__ = ["LogNormal", "Profile", "PROFILES", "profile", "calibrate", "fit", "fit_lognormal"]

RESPONSE_BASE_S = 1.0  # assumed time to first token of the previous turn (s), to turn gaps into think times
RESPONSE_TPS = 40.0  # assumed decode speed (tokens/s), the simulator's default
MAX_PROMPT_TOKENS = 200_000  # a session whose next prompt would not fit ends (context window)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class LogNormal:
    """Lognormal (median, sigma) clipped to ``[lo, hi]``; ``mean`` is the clipped mean."""

    median: float
    sigma: float
    lo: float = 0.0
    hi: float = math.inf

    def sample(self, rng) -> float:
        x = self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0)) if self.sigma > 0 else self.median
        return min(max(x, self.lo), self.hi)

    def scaled(self, f: float) -> "LogNormal":
        return LogNormal(self.median * f, self.sigma, self.lo * f, self.hi * f)

    @property
    def mean(self) -> float:
        m, s = math.log(self.median), self.sigma
        if s <= 0:
            return min(max(self.median, self.lo), self.hi)
        za = (math.log(self.lo) - m) / s if self.lo > 0 else -math.inf
        zb = (math.log(self.hi) - m) / s if self.hi < math.inf else math.inf
        body = math.exp(m + s * s / 2) * (_phi(zb - s) - _phi(za - s))
        return self.lo * _phi(za) + body + (self.hi * (1.0 - _phi(zb)) if zb < math.inf else 0.0)


def fit_lognormal(values: list[float]) -> tuple[float, float]:
    """(median, sigma) of the logs: geometric mean and standard deviation of log values."""
    logs = [math.log(v) for v in values if v > 0]
    return math.exp(statistics.fmean(logs)), statistics.pstdev(logs)


@dataclass(frozen=True)
class Profile:
    name: str
    chain: ChainSummary
    first_sigma: float
    first_median: float
    first_beta: float
    user: LogNormal
    output: LogNormal
    think: LogNormal  # seconds
    first_lo: float = 64.0
    first_hi: float = 131_072.0
    max_prompt_tokens: int = MAX_PROMPT_TOKENS

    @cached_property
    def survival(self) -> tuple[float, ...]:
        """``survival[k]`` = P(F >= k), k = 0 .. max follow-ups."""
        return _survival(self.chain)

    def first(self, followups: int) -> LogNormal:
        return LogNormal(self.first_median * (1 + followups) ** -self.first_beta, self.first_sigma,
                         self.first_lo, self.first_hi)

    @cached_property
    def followup_pmf(self) -> tuple[float, ...]:
        s = self.survival
        return tuple(s[k] - (s[k + 1] if k + 1 < len(s) else 0.0) for k in range(len(s)))

    @property
    def mean_turns(self) -> float:
        """Expected requests per session (= published requests / sessions, before the context cap)."""
        return sum(self.survival)


def _survival(c: ChainSummary) -> tuple[float, ...]:
    h = c.turn_id_histogram
    surv = [v / h[0] for v in h]
    tail = (c.requests - sum(h)) / h[-1]  # = q / (1 - q) for a geometric tail after the last bin
    q = tail / (1.0 + tail)
    while len(surv) <= c.followups_max:
        surv.append(surv[-1] * q)
    return tuple(surv)


def _aggregates(pmf: tuple[float, ...], first_mean_of, g: float, u: float) -> tuple[float, float]:
    """(mean input per request, repeated share) in expectation (no context cap)."""
    requests = total = fresh = 0.0
    for f, p in enumerate(pmf):
        if p <= 0.0:
            continue
        p0 = first_mean_of(f)
        requests += p * (f + 1)
        total += p * ((f + 1) * p0 + f * (f + 1) / 2 * g)
        fresh += p * (p0 + f * u)
    return total / requests, 1.0 - fresh / total


def calibrate(chain: ChainSummary, first_sigma: float, user: LogNormal, output: LogNormal,
              lo: float = 64.0, hi: float = 131_072.0) -> tuple[float, float]:
    """(first_median, first_beta) matching the chain summary's mean input and repeated share."""
    pmf = Profile(chain.model, chain, first_sigma, 1.0, 0.0, user, output, user).followup_pmf
    pmf = tuple(p for p in pmf if p > 1e-12)  # the geometric tail beyond that changes nothing
    g, u = output.mean + user.mean, user.mean
    target_mean, target_reuse = chain.mean_input_tokens, chain.reuse_ratio

    def solve_median(beta: float) -> float:
        lo_m, hi_m = 1.0, 1e7
        for _ in range(40):
            mid = math.sqrt(lo_m * hi_m)
            fm = lambda f: LogNormal(mid * (1 + f) ** -beta, first_sigma, lo, hi).mean  # noqa: E731
            if _aggregates(pmf, fm, g, u)[0] < target_mean:
                lo_m = mid
            else:
                hi_m = mid
        return lo_m

    def reuse(beta: float) -> float:
        m = solve_median(beta)
        return _aggregates(pmf, lambda f: LogNormal(m * (1 + f) ** -beta, first_sigma, lo, hi).mean, g, u)[1]

    b_lo, b_hi = 0.0, 6.0  # more beta = more of the input in first prompts = less repeated
    for _ in range(24):
        mid = (b_lo + b_hi) / 2
        if reuse(mid) > target_reuse:
            b_lo = mid
        else:
            b_hi = mid
    beta = (b_lo + b_hi) / 2
    return solve_median(beta), beta


def fit(name: str, output_mean: float | None, first: tuple[float, float] | None = None) -> Profile:
    """The profile of ``name`` from the samples and the chain summary; ``first`` = (median, beta)
    of the first prompt if already calibrated (:func:`calibrate` takes ~0.5 s)."""
    chain, sessions = CHAINS[name], SAMPLES[name]
    firsts = [s[0][1] for s in sessions]
    users = [b[1] - a[1] - a[2] for s in sessions for a, b in zip(s, s[1:])]
    outs = [t[2] for s in sessions for t in s]
    thinks = [max(1.0, b[0] - a[0] - RESPONSE_BASE_S - a[2] / RESPONSE_TPS) for s in sessions for a, b in zip(s, s[1:])]
    _, first_sigma = fit_lognormal(firsts)
    user = LogNormal(*fit_lognormal(users), lo=1.0, hi=65_536.0)
    out_median, out_sigma = fit_lognormal(outs)
    output = LogNormal(out_median, out_sigma, lo=1.0, hi=8_192.0)
    if output_mean is not None:  # rescale the median so that the clipped mean is the published one
        output = LogNormal(out_median * output_mean / output.mean, out_sigma, 1.0, 8_192.0)
        for _ in range(20):
            output = LogNormal(output.median * output_mean / output.mean, out_sigma, 1.0, 8_192.0)
    think = LogNormal(*fit_lognormal(thinks), lo=1.0, hi=4 * 3600.0)
    median, beta = first or calibrate(chain, first_sigma, user, output)
    return Profile(name, chain, first_sigma, median, beta, user, output, think)


MINIMAX_OUTPUT_MEAN = 1.15e9 / 4_223_356  # published: 1.15 G output tokens over 4.22 M requests
# (median, beta) of the first prompt from calibrate(); tests/unit/test_workload.py re-derives them
PROFILES: dict[str, Profile] = {
    "deepseek-v32": fit("deepseek-v32", None, (12153.7, 1.1583)),
    "minimax-m25": fit("minimax-m25", MINIMAX_OUTPUT_MEAN, (50781.9, 0.7623)),
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown session profile {name!r}; one of {sorted(PROFILES)}") from None
