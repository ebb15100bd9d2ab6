"""Session profiles of two Chutes chutes, derived from the published figures in :mod:`.figures`.

A profile says how a session is drawn (:mod:`.sessions` does the drawing). Every size of a session
with F follow-ups scales with ``(1 + F) ** -beta``: sessions that will last longer start smaller
and add less per turn (the samples show it: DeepSeek-V3.2's single turns are 26k tokens, its
15-turn sessions start at 1-2k and add ~0.5k a turn; MiniMax-M2.5's 23-turn session adds ~1.2k a
turn, its 7-turn one ~0.8k, its 4-turn one ~4k).

- **follow-ups** F: ``P(F >= k)`` = turn-id histogram[k] / histogram[0] for k <= 19 (exact: a
  session has a turn k iff it has at least k follow-ups); beyond 19 a geometric tail whose ratio
  makes the expected number of requests per session equal the published requests / sessions,
  capped at the published maximum;
- **first prompt** P0 ~ lognormal, median ``first_median x (1 + F)^-beta``, sigma of the samples'
  first prompts;
- **new tokens** U of a follow-up (tool results, user text) ~ lognormal, median
  ``user_median x (1 + F)^-beta``, sigma of the samples' increments (input of turn k+1 - input of
  turn k - output of turn k), clipped at 131k;
- ``first_median``, ``user_median`` and ``beta`` are solved (:func:`calibrate`) so that, in
  expectation, the mean first prompt (= the first turns' share of all input), the mean new tokens
  per follow-up and the mean input per request are the published ones; the share of input that
  repeats the session's prefix then follows (input = first turns + repeated + new);
- **output** O ~ lognormal with the samples' sigma, median set so that the clipped mean is the
  published output per request (``figure20_sweep.csv`` totals: ~471 DeepSeek-V3.2, ~272 MiniMax-M2.5);
- **think time** (answer -> next turn) ~ lognormal fitted to the published gaps between turns
  that are not concurrent, minus an assumed response time ``RESPONSE_BASE_S + output /
  RESPONSE_TPS`` (the samples carry no completion time), at least 0.1 s (the sample clocks are
  whole seconds): from under a second (agent loops) to hours;
- **concurrent sub-requests**: the share of published follow-ups that start at most
  ``CONCURRENT_GAP_S`` after their parent *started* (they cannot have seen its answer: an agent's
  parallel calls) in the samples and excerpts (MiniMax-M2.5 14 of 90, DeepSeek-V3.2 4 of 70); their
  delay after the parent's start ~ lognormal fitted to those gaps (1 ms-1.3 s). A sub-request
  resends the parent's prompt without its answer;
- **shared prefixes across sessions**: the share of published first turns that arrived with
  cached tokens (a prefix another session left: a common system prompt; 8 of 16 for both) start
  with one of ``SHARED_POOL`` common prompts (popularity ~ 1/rank), whose sizes are evenly spaced
  on a log scale between the smallest and the largest cached first-turn prefix published (128-26k
  DeepSeek-V3.2, 144-28.8k MiniMax-M2.5); the pool size and the popularity law are assumptions;
- **context window** ``MAX_PROMPT_TOKENS``: a new message that would overflow it is drawn again
  (sessions.py), which the expectation in :func:`calibrate` ignores; ``CAP_BOOST`` corrects for it.

"Samples" above means the published sample sessions and the chain excerpts together.

"Repeated share" is what ``structural_prefix_tokens`` measures in the excerpts: a follow-up's
tokens that repeat its parent's input and output (prompt k = prompt k-1 + answer k-1 + U k; a
concurrent sub-request repeats the parent's prompt only), over all input tokens.
"""
from __future__ import annotations

import dataclasses
import math
import random
import statistics
from dataclasses import dataclass
from functools import cached_property

from benchmarks.workload.figures import (CHAINS, EXCERPT_SINGLES, EXCERPTS, FIRST_TURN_TOKENS_TOTAL,
                                         OUTPUT_TOKENS_TOTAL, SAMPLES, ChainSummary)

__all__ = ["LogNormal", "Profile", "Targets", "PROFILES", "CAP_BOOST", "profile", "calibrate", "fit", "fit_lognormal",
           "targets"]

RESPONSE_BASE_S = 1.0  # assumed time to first token of the previous turn (s), to turn gaps into think times
RESPONSE_TPS = 40.0  # assumed decode speed (tokens/s), the simulator's default
MAX_PROMPT_TOKENS = 200_000  # context window: no prompt is larger (sessions.py)
CONCURRENT_GAP_S = 1.32  # the excerpts' sub-requests start 0.8 ms-1.31 s after their parent; no sequential gap < 4 s
MIN_THINK_S = 0.1  # the samples' whole-second clocks resolve no less
SHARED_POOL = 64  # common system prompts per profile (assumption)


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

    def at(self, median: float) -> "LogNormal":
        return LogNormal(median, self.sigma, self.lo, self.hi)

    @property
    def mean(self) -> float:
        m, s = math.log(self.median), self.sigma
        if s <= 0:
            return min(max(self.median, self.lo), self.hi)
        za = (math.log(self.lo) - m) / s if self.lo > 0 else -math.inf
        zb = (math.log(self.hi) - m) / s if self.hi < math.inf else math.inf
        body = math.exp(m + s * s / 2) * (_phi(zb - s) - _phi(za - s))
        return self.lo * _phi(za) + body + (self.hi * (1.0 - _phi(zb)) if zb < math.inf else 0.0)

    def with_mean(self, target: float) -> "LogNormal":
        """The same sigma and clip, median set so that the clipped mean is ``target``."""
        d = self
        for _ in range(30):
            d = d.at(d.median * target / d.mean)
        return d


def fit_lognormal(values: list[float]) -> tuple[float, float]:
    """(median, sigma) of the logs: geometric mean and standard deviation of log values."""
    logs = [math.log(v) for v in values if v > 0]
    return math.exp(statistics.fmean(logs)), statistics.pstdev(logs)


@dataclass(frozen=True)
class Targets:
    """The published per-chute figures a profile is calibrated to (sources in :mod:`.figures`)."""

    first_mean: float  # mean first prompt = first turns' input / sessions (cachesim working set)
    new_mean: float  # (input - repeated - first turns) / follow-ups
    output_mean: float  # output tokens / requests (figure20_sweep.csv)
    input_mean: float  # input tokens / requests
    first_share: float  # first turns' share of all input
    reuse: float  # share of input repeating the session's prefix (structural_reuse_ratio)


def targets(name: str) -> Targets:
    c = CHAINS[name]
    first = FIRST_TURN_TOKENS_TOTAL[name]
    new = c.input_tokens_total - c.structural_prefix_tokens_total - first
    return Targets(first / c.sessions, new / c.linked_turns, OUTPUT_TOKENS_TOTAL[name] / c.requests,
                   c.mean_input_tokens, first / c.input_tokens_total, c.reuse_ratio)


@dataclass(frozen=True)
class Profile:
    name: str
    chain: ChainSummary
    first_sigma: float
    first_median: float
    beta: float  # every size of a session with F follow-ups scales with (1 + F) ** -beta
    user: LogNormal  # new tokens of a follow-up of a session with F = 0 (scale with user_at(F))
    output: LogNormal
    think: LogNormal  # seconds from an answer to the next turn
    concurrent_share: float = 0.0  # follow-ups that are parallel sub-requests of their parent
    concurrent_gap: LogNormal = LogNormal(0.05, 0.0)  # their start after the parent's start (s)
    shared_share: float = 0.0  # sessions whose first prompt starts with a common system prompt
    shared_lo: float = 128.0  # sizes of the common prompts (tokens), evenly spaced on a log scale in [lo, hi]
    shared_hi: float = 28_768.0
    first_lo: float = 64.0
    first_hi: float = 131_072.0
    max_prompt_tokens: int = MAX_PROMPT_TOKENS

    @property
    def first_beta(self) -> float:  # the name before the new tokens scaled too
        return self.beta

    @cached_property
    def survival(self) -> tuple[float, ...]:
        """``survival[k]`` = P(F >= k), k = 0 .. max follow-ups."""
        return _survival(self.chain)

    def first(self, followups: int) -> LogNormal:
        return LogNormal(self.first_median * (1 + followups) ** -self.beta, self.first_sigma,
                         self.first_lo, self.first_hi)

    def user_at(self, followups: int) -> LogNormal:
        return self.user.at(self.user.median * (1 + followups) ** -self.beta)

    @cached_property
    def followup_pmf(self) -> tuple[float, ...]:
        s = self.survival
        return tuple(s[k] - (s[k + 1] if k + 1 < len(s) else 0.0) for k in range(len(s)))

    @property
    def mean_turns(self) -> float:
        """Expected requests per session (= published requests / sessions, before the context cap)."""
        return sum(self.survival)

    @cached_property
    def shared_sizes(self) -> tuple[int, ...]:
        """Tokens of the common system prompts, most popular first (fixed by the profile's name)."""
        r = self.shared_hi / self.shared_lo  # evenly spaced on a log scale, popularity in a fixed shuffle
        sizes = [round(self.shared_lo * r ** (i / (SHARED_POOL - 1))) for i in range(SHARED_POOL)]
        random.Random(f"{self.name}:shared-sizes").shuffle(sizes)
        return tuple(sizes)

    @cached_property
    def shared_cdf(self) -> tuple[float, ...]:
        w = [1.0 / (i + 1) for i in range(SHARED_POOL)]
        total, acc, out = sum(w), 0.0, []
        for x in w:
            acc += x
            out.append(acc / total)
        return tuple(out)


def _survival(c: ChainSummary) -> tuple[float, ...]:
    h = c.turn_id_histogram
    surv = [v / h[0] for v in h]
    tail = (c.requests - sum(h)) / h[-1]  # = q / (1 - q) for a geometric tail after the last bin
    q = tail / (1.0 + tail)
    while len(surv) <= c.followups_max:
        surv.append(surv[-1] * q)
    return tuple(surv)


def _pmf(chain: ChainSummary) -> tuple[float, ...]:
    s = _survival(chain)
    pmf = [s[k] - (s[k + 1] if k + 1 < len(s) else 0.0) for k in range(len(s))]
    return tuple(p for p in pmf if p > 1e-12)  # the geometric tail beyond that changes nothing


def _solve_median(base: LogNormal, weight, pmf, beta: float, target: float) -> float:
    """The median m of ``base`` with ``sum_F pmf[F] weight(F) mean(m (1+F)^-beta) / sum pmf weight = target``."""
    norm = sum(p * weight(f) for f, p in enumerate(pmf))
    m = base.median
    for _ in range(30):
        got = sum(p * weight(f) * base.at(m * (1 + f) ** -beta).mean for f, p in enumerate(pmf)) / norm
        m *= target / got
    return m


def expected(pmf, first: LogNormal, user: LogNormal, output_mean: float, beta: float, concurrent: float
             ) -> tuple[float, float, float]:
    """(mean first prompt, mean new tokens per follow-up, mean input per request) in expectation
    (no context cap), for first prompt and new tokens of median ``median x (1 + F)^-beta``."""
    sessions = requests = first_sum = new_sum = followups = total = 0.0
    for f, p in enumerate(pmf):
        p0 = first.at(first.median * (1 + f) ** -beta).mean
        u = user.at(user.median * (1 + f) ** -beta).mean
        sessions += p
        requests += p * (f + 1)
        followups += p * f
        first_sum += p * p0
        new_sum += p * f * u
        total += p * ((f + 1) * p0 + f * (f + 1) / 2 * (u + (1.0 - concurrent) * output_mean))
    return first_sum / sessions, new_sum / followups, total / requests


def calibrate(chain: ChainSummary, t: Targets, first: LogNormal, user: LogNormal, concurrent: float
              ) -> tuple[float, float, float]:
    """(first_median, user_median, beta): the mean first prompt, new tokens per follow-up and input
    per request of ``t`` (``first`` and ``user`` give sigma and clip)."""
    pmf = _pmf(chain)

    def medians(beta: float) -> tuple[float, float]:
        m0 = _solve_median(first, lambda f: 1.0, pmf, beta, t.first_mean)
        mu = _solve_median(user, lambda f: f, pmf, beta, t.new_mean)
        return m0, mu

    b_lo, b_hi = 0.0, 4.0  # more beta = more of the tokens in short sessions = less input per request
    for _ in range(30):
        beta = (b_lo + b_hi) / 2
        m0, mu = medians(beta)
        if expected(pmf, first.at(m0), user.at(mu), t.output_mean, beta, concurrent)[2] > t.input_mean:
            b_lo = beta
        else:
            b_hi = beta
    beta = (b_lo + b_hi) / 2
    m0, mu = medians(beta)
    return m0, mu, beta


def _published(name: str):
    """Per profile: sessions as lists of (gap from parent start or None, it, ot, ct), samples then excerpts."""
    out = []
    for s in SAMPLES[name]:
        out.append([(None if i == 0 else float(t[0] - s[i - 1][0]), t[1], t[2], t[3]) for i, t in enumerate(s)])
    out += [list(s) for s in EXCERPTS[name]]
    return out


def fit(name: str, solved: tuple[float, float, float] | None = None, boost: tuple[float, float] = (1.0, 1.0)
        ) -> Profile:
    """The profile of ``name`` from the samples, excerpts and chain summary; ``solved`` =
    (first_median, user_median, beta) if already calibrated (:func:`calibrate` takes ~2 s).
    ``boost`` multiplies the mean input and the mean new tokens per follow-up the calibration aims
    at: the expectation ignores the context window (see ``CAP_BOOST``)."""
    chain, t, sessions = CHAINS[name], targets(name), _published(name)
    t = dataclasses.replace(t, input_mean=t.input_mean * boost[0], new_mean=t.new_mean * boost[1])
    pairs = [(a, b) for s in sessions for a, b in zip(s, s[1:])]
    concurrent = [b for a, b in pairs if b[0] <= CONCURRENT_GAP_S]
    users = [b[1] - a[1] - (0 if b[0] <= CONCURRENT_GAP_S else a[2]) for a, b in pairs]
    thinks = [max(MIN_THINK_S, b[0] - RESPONSE_BASE_S - a[2] / RESPONSE_TPS)
              for a, b in pairs if b[0] > CONCURRENT_GAP_S]
    outs = [x[2] for s in sessions for x in s] + [EXCERPT_SINGLES[name][1]]
    firsts = [s[0][1] for s in sessions] + [EXCERPT_SINGLES[name][0]]
    cached_firsts = [s[0][3] for s in sessions if s[0][3] > 0] + [EXCERPT_SINGLES[name][2]]
    first_sigma = fit_lognormal(firsts)[1]
    first_d = LogNormal(t.first_mean, first_sigma, 64.0, 131_072.0)
    user_d = LogNormal(t.new_mean, fit_lognormal(users)[1], 1.0, 131_072.0)
    output = LogNormal(*fit_lognormal(outs), lo=1.0, hi=8_192.0).with_mean(t.output_mean)
    think = LogNormal(*fit_lognormal(thinks), lo=MIN_THINK_S, hi=6 * 3600.0)
    c_share = len(concurrent) / len(pairs)
    c_gap = LogNormal(*fit_lognormal([b[0] for b in concurrent]), lo=0.001, hi=CONCURRENT_GAP_S)
    m0, mu, beta = solved or calibrate(chain, t, first_d, user_d, c_share)
    return Profile(name, chain, first_sigma, m0, beta, user_d.at(mu), output, think, c_share, c_gap,
                   len(cached_firsts) / (len(sessions) + 1), float(min(cached_firsts)), float(max(cached_firsts)))


# The expectation in calibrate() ignores the context window: a new message that would overflow it
# is drawn again (up to 8 times, then cut to fit; sessions.py), which takes ~2% off the mean input
# and ~3% off the new tokens per follow-up, so the calibration aims that much higher (found by
# drawing 60,000 sessions per profile until both ratios were 1.000).
CAP_BOOST: dict[str, tuple[float, float]] = {"deepseek-v32": (1.018, 1.029), "minimax-m25": (1.018, 1.033)}
# (first_median, user_median, beta) from calibrate() with CAP_BOOST; tests/unit/test_workload.py re-derives them
PROFILES: dict[str, Profile] = {
    "deepseek-v32": fit("deepseek-v32", (8121.7, 1900.4, 1.01658), CAP_BOOST["deepseek-v32"]),
    "minimax-m25": fit("minimax-m25", (10759.1, 57341.9, 1.46553), CAP_BOOST["minimax-m25"]),
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown session profile {name!r}; one of {sorted(PROFILES)}") from None
