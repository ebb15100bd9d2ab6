"""The DES in session mode: :class:`Simulation` with sessions, a prefix cache and affinity.

The model is in :mod:`benchmarks.des.sessions`. Each turn is one request of the base simulation
(same replicas, cores, snapshot, exchange, 429 retries and queues); what differs is where requests
come from (``SESSION`` and ``TURN`` events instead of ``ARRIVAL``), what a request costs (its
tokens, less what the chute's cache holds) and that it carries its session: the replica's
``RoutingCore.pick`` gets ``affinity_key = h64("header", session id)``, the key :mod:`chutes_lb.proxy.session` derives
from a session header, so the core's ``SessionMemo``, rendezvous order and bounded-load
pick are production's. ``SimConfig.affinity``: None (the strategy alone: ``ROUTING_AFFINITY=false``)
or ``"affinity[:c]"`` (``ROUTING_AFFINITY=true`` with ``ROUTING_AFFINITY_BOUND=c``, default the
shipped bound); the ``sticky`` strategy is the registry's (always the first chute of the
session's rendezvous order; another only on a retry after it failed).

Measured: sessions ``warmup_sessions .. warmup_sessions + n_sessions - 1``. Sessions keep arriving
until every measured session has ended, so the load stays steady for all of them, or until
``tail_frac`` x the measured arrival span after the last measured arrival (think times reach
hours: without the bound one session would set the run's length); sessions still open then are
left out of the session counts (``unfinished``), their finished turns stay in.
"""
from __future__ import annotations

import math

import numpy as np

from dataclasses import replace

from benchmarks.des.config import SimConfig
from benchmarks.des.sessions import ChuteCache, ServiceModel, SessionResult, SessionState, session_stream
from benchmarks.des.sim import DEPART, Simulation
from benchmarks.workload.sessions import SessionWorkload
from chutes_lb.routing.affinity import h64
from chutes_lb.routing.attempts import Usage
from chutes_lb.routing.core import RoutingConfig

__all__ = ["SessionSimulation"]

SESSION, TURN, STOP = 100, 101, 102


class SessionSimulation(Simulation):
    def __init__(self, cfg: SimConfig) -> None:
        if cfg.sessions is None:
            raise ValueError("SessionSimulation needs SimConfig.sessions")
        sc = self.sc = cfg.sessions
        self.workload = SessionWorkload.named(sc.profile, token_scale=sc.token_scale, think_scale=sc.think_scale)
        self.model = ServiceModel.of(sc, self.workload)  # before the cores: their config reads its time unit
        super().__init__(cfg)
        self.session_lam = cfg.load * self.total_cap / self.workload.mean_turns  # per unit (= 1 turn service)
        self.stream = session_stream(cfg.seed, self.workload, self.session_lam / self.model.seconds_per_unit, self.R)  # per second
        self.aff_label = cfg.affinity or ""
        self.caches = [ChuteCache(sc.cache_tokens_per_slot * c) for c in self.caps]
        self.handlers[SESSION] = self.on_session
        self.handlers[TURN] = self.on_turn
        self.handlers[STOP] = self.on_stop
        self.turn_of: dict[int, tuple[SessionState, int]] = {}
        self.ttft_at: dict[int, float] = {}
        self.next_session_t = 0.0
        self.n_total = math.inf
        self.step_pct = max(1, sc.n_sessions // 10)
        self.open_measured = self.ended = 0
        self.last_measured = sc.warmup_sessions + sc.n_sessions
        self.ttft_first: list[float] = []
        self.ttft_follow: list[float] = []
        self.e2e: list[float] = []
        self.prompt_total = self.prompt_computed = 0
        self.computed: list[int] = []  # per measured turn
        self.m_attempts = self.m_rejected = self.m_failed = 0
        self.multi = self.one_chute = self.abandoned = 0
        self.area0: list[float] | None = None
        self.t0 = 0.0

    def routing_config(self) -> RoutingConfig:
        """Affinity as ``SimConfig.affinity`` says; the fleet load behind the bound is reused for
        one second of the DES's time, as a proxy worker reuses it (``SessionMemo``)."""
        spec = self.cfg.affinity
        if spec is not None and (not isinstance(spec, str) or spec.partition(":")[0] != "affinity"):
            raise ValueError(f"unknown affinity {spec!r}: None or 'affinity[:c]' (sticky is a strategy)")
        base = super().routing_config()
        bound = spec.partition(":")[2] if spec else ""
        return replace(base, affinity=spec is not None, affinity_bound=float(bound) if bound else base.affinity_bound,
                       load_reuse_seconds=1.0 / self.model.seconds_per_unit)

    def affinity_key(self, req: int) -> int | None:
        st = self.turn_of[req][0]
        if st.key is None:
            st.key = h64("header", st.plan.key)  # as chutes_lb.proxy.session keys a session header
        return st.key

    # ------------------------------------------------------------ arrivals
    def start_arrivals(self) -> None:
        span = (self.sc.warmup_sessions + self.sc.n_sessions) / self.session_lam
        self.bin_width = max(span / self.cfg.share_bins, 1e-9)
        self.bin_end = self.bin_width
        self.schedule_next_session()

    def schedule_next_session(self) -> None:
        plan, replicas, paces = next(self.stream)
        st = SessionState(plan, self.sc.warmup_sessions <= plan.index < self.last_measured, replicas, paces)
        self.push(plan.start / self.model.seconds_per_unit, SESSION, st)

    def on_session(self, t: float, st: SessionState, b) -> None:
        if st.plan.index == self.sc.warmup_sessions:  # measurement starts: load integrals from here
            for c in range(self.n):
                self.touch(c, t)
            self.area0, self.t0 = list(self.area), t
        if st.measured:
            self.open_measured += 1
        if st.plan.index == self.last_measured - 1:  # the last measured session: bound the tail
            self.push(t + self.sc.tail_frac * (t - self.t0), STOP)
        if st.plan.index + 1 < self.last_measured or self.open_measured:
            self.schedule_next_session()
        self.on_turn(t, (st, 0), None)

    def on_stop(self, t: float, a, b) -> None:
        self.n_total = self.done  # measured sessions still open now are left out (``unfinished``)

    def on_turn(self, t: float, a, b) -> None:
        st, k = a
        req = self.arrived
        self.arrived += 1
        self.turn_of[req] = (st, k)
        self.arrival_t[req] = t
        self.attempts_of[req] = 1
        self.attempt(req, st.replicas[k], t)

    # ------------------------------------------------------------ routing and service
    def attempt(self, req: int, r: int, t: float) -> None:
        if self.turn_of[req][0].measured:
            self.m_attempts += 1
        super().attempt(req, r, t)

    def on_retry(self, t: float, a, status) -> None:
        if status == 429 and self.turn_of[a[0]][0].measured:
            self.m_rejected += 1
        super().on_retry(t, a, status)

    def begin(self, req: int, r: int, c: int, t: float) -> None:
        st, k = self.turn_of[req]
        turn = st.plan.turns[k]
        cached = self.caches[c].serve(st.plan.index, turn.prompt_tokens)
        factor = (1.0 + self.alpha * self.busy[c] / self.caps[c]) / self.speed[c]
        first, total = self.model.times(turn.prompt_tokens - cached, turn.output_tokens, st.paces[k], factor)
        self.ttft_at[req] = t + first
        if st.measured:
            self.prompt_total += turn.prompt_tokens
            self.prompt_computed += turn.prompt_tokens - cached
            self.computed.append(turn.prompt_tokens - cached)
            (self.ttft_follow if k else self.ttft_first).append(t + first - self.arrival_t[req])
        self.push(t + total, DEPART, (req, r, c, turn.output_tokens))

    def report_success(self, req: int, t: float, work: float) -> None:
        call = self.calls[req]
        call.close("success", ttft=self.ttft_at.pop(req) - call.opened_at, usage=Usage(work, None))

    # ------------------------------------------------------------ outcomes
    def served(self, req: int, c: int, t: float) -> None:
        st, k = self.turn_of.pop(req)
        st.chutes.add(c)
        if st.measured:
            self.e2e.append(t - self.arrival_t[req])
        self.finish(req)
        turns = st.plan.turns
        if k + 1 < len(turns):
            self.push(t + turns[k + 1].think / self.model.seconds_per_unit, TURN, (st, k + 1))
        else:
            self.session_ended(st, False)

    def gave_up(self, req: int, t: float) -> None:
        st, _ = self.turn_of.pop(req)
        self.ttft_at.pop(req, None)
        if st.measured:
            self.m_failed += 1
        self.finish(req)
        self.session_ended(st, True)

    def session_ended(self, st: SessionState, failed: bool) -> None:
        if not st.measured:
            return
        self.ended += 1
        self.abandoned += failed
        if len(st.plan.turns) > 1 and not failed:
            self.multi += 1
            self.one_chute += len(st.chutes) == 1
        self.open_measured -= 1
        if self.cfg.progress and self.ended % self.step_pct == 0:
            self.cfg.progress(self.ended / self.sc.n_sessions)
        if self.ended >= self.sc.n_sessions:
            self.n_total = self.done  # the loop stops after this event

    def finish(self, req: int) -> None:
        del self.arrival_t[req], self.attempts_of[req]
        del self.calls[req]
        self.done += 1

    def result(self, wall: float) -> SessionResult:
        base = super().result(wall)
        for c in range(self.n):
            self.touch(c, self.now)
        a0 = self.area0 or [0.0] * self.n
        span = max(self.now - self.t0, 1e-12)
        loads = np.array([(self.area[c] - a0[c]) / span / self.caps[c] for c in range(self.n)])
        label = self.cfg.strategy + (f"+{self.aff_label}" if self.aff_label else "")
        fields = {k: getattr(base, k) for k in base.__dataclass_fields__}
        fields.update(strategy=label, n=self.ended, latencies=np.array(self.e2e), attempts=self.m_attempts,
                      rejected=self.m_rejected, failed=self.m_failed)
        return SessionResult(**fields, ttft_first=np.array(self.ttft_first), ttft_follow=np.array(self.ttft_follow),
                             prompt_total=self.prompt_total, prompt_computed=self.prompt_computed, sessions=self.ended,
                             multi_turn=self.multi, one_chute=self.one_chute, abandoned=self.abandoned, loads=loads,
                             unfinished=self.sc.n_sessions - self.ended,
                             seconds_per_unit=self.model.seconds_per_unit, computed_turns=np.array(self.computed))
