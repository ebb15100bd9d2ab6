"""The routing core: one per worker process, synchronous, no I/O. It holds what routing knows (the
configured chutes, the adopted snapshot and its state, :class:`LiveState`, the other workers'
counts, the attempt ledger, the latest per-chute estimates) and makes every decision.

Every upstream attempt is opened by :meth:`RoutingCore.pick` and closed by
:meth:`RoutingCore.close_attempt`, both called by the attempt's one owner,
:class:`~chutes_lb.routing.attempts.UpstreamCall` (held by the proxy's gateway, or by the LiteLLM
hook for requests that reach LiteLLM's own routes); the background tasks (:mod:`.follower`, :mod:`.sharing`) call :meth:`adopt`, :meth:`snapshot_missing`,
:meth:`snapshot_invalid`, :meth:`snapshot_unreachable`, :meth:`exchanged` and :meth:`tick`. The
clock, the random source and the metrics are injected, so unit tests drive it with a fake clock,
a seeded ``random.Random`` and :class:`~chutes_lb.routing.metrics.RecordingMetrics`.

Identity: LiteLLM's deployment id (``model_info.id``) names a deployment in a model group; the
chute UUID names the chute. Snapshot data, live counts, 429 holds, metrics and logs belong to the
chute, whichever deployment (group) sent the request.

Must not import: ``chutes_lb.settings``, Redis, HTTP clients, LiteLLM, prometheus_client, or anything
in ``chutes_lb.proxy`` (``tests/unit/test_import_rules.py``).
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from chutes_lb.fleet import ChuteRef
from chutes_lb.routing.affinity import SessionMemo
from chutes_lb.routing.capability import Capability, Needs, NoChuteFits, unfit
from chutes_lb.routing.decision import REGISTRY, Affinity, Strategy, decide, strategy_of
from chutes_lb.routing.estimate import DEFAULT_PARAMS, Candidate, CandidateSet, Estimate, HeadroomParams, estimate, penalty_active
from chutes_lb.routing.ledger import Attempt, AttemptLedger
from chutes_lb.routing.live import LiveState
from chutes_lb.routing.remote import RemoteCounts, aggregate_remote, exchange
from chutes_lb.routing.metrics import RoutingMetrics
from chutes_lb.routing.report import DecisionReport
from chutes_lb.snapshot.model import Snapshot

__all__ = ["RoutingConfig", "RoutingCore", "SNAPSHOT_STATES"]

log = logging.getLogger("chutes_lb.routing")

SNAPSHOT_STATES = ("ok", "missing", "stale", "redis_unreachable", "invalid")


@dataclass(frozen=True)
class RoutingConfig:
    """What the core needs, as plain values (the proxy's runtime builds it from the settings it
    read once; the DES builds it from its own configuration)."""

    strategy: "str | Strategy" = "headroom"  # a name in decision.REGISTRY (the DES's ablations pass a record)
    params: HeadroomParams = DEFAULT_PARAMS
    stale_seconds: float = 120.0
    request_timeout_seconds: float = 600.0
    summary_seconds: float = 10.0
    affinity: bool = True  # sessions to their own chute within the load bound (headroom only)
    affinity_bound: float = 2.0  # DES sessions, 60% load: 81% of sessions on one chute at 2, 41% at 1.25 (BENCHMARKS.md)
    affinity_depth: int = 2  # chutes of a session's order tried before the usual pick
    load_reuse_seconds: float = 1.0  # the fleet's load (for the affinity bound) is reused this long (the DES: 1 s in its time unit)


class RoutingCore:
    def __init__(self, deployments: Sequence[ChuteRef], config: RoutingConfig, metrics: RoutingMetrics, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None, worker_id: str = "worker",
                 live: LiveState | None = None) -> None:
        self.config = config
        self.spec: Strategy = REGISTRY["passthrough"] if config.strategy == "passthrough" else strategy_of(config.strategy)
        self.strategy = self.spec.name
        # sessions steer the pick: a bounded-affinity strategy with affinity on, or the sticky baseline
        self.uses_sessions = self.spec.sessions == "sticky" or (config.affinity and self.spec.sessions == "bounded")
        self.params = config.params
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.worker_id = worker_id
        self.chutes: dict[str, ChuteRef] = {}
        self.groups_of: dict[str, list[str]] = {}  # chute id -> the model groups it serves
        for ref in deployments:
            self.chutes.setdefault(ref.chute_id, ref)
            self.groups_of.setdefault(ref.chute_id, []).append(ref.model_group)
        self.chute_of_deployment: dict[str, str] = {ref.deployment_id: ref.chute_id for ref in deployments}
        self.live = live if live is not None else LiveState()  # the DES passes one with its time unit's holds
        self.remote: dict[str, RemoteCounts] = {cid: RemoteCounts() for cid in self.chutes}
        for cid in self.chutes:
            self.live.chute(cid)
        self.ledger = AttemptLedger()
        self.snapshot: Snapshot | None = None
        self.snapshot_state = "missing"
        self.snapshot_checked = False  # True after the first read attempt (readiness)
        self.replicas = 1  # worker processes routing to this fleet: 1 + workers with fresh exports
        self.estimates: dict[str, Estimate] = {}
        self.estimated_at: float | None = None
        self._known_instances: dict[str, int] = {}
        self._candidate_cache: dict[tuple[object, tuple[str, ...]], CandidateSet] = {}
        self._chute_maps: dict[tuple[str, ...], tuple[dict[str, str], tuple[str, ...]]] = {}
        self.report = DecisionReport(self.strategy)
        self.sessions = SessionMemo(config.affinity_depth, reuse_seconds=config.load_reuse_seconds)
        self.affinity_counts: Counter[str] = Counter()  # this worker's session decisions, for /info
        self.on_room: Callable[[], None] | None = None  # called when a slot may have freed (the gateway's slot wait)

    # ------------------------------------------------------------ naming
    def chute_id(self, deployment_id: str) -> str:
        return self.chute_of_deployment.get(deployment_id, deployment_id)

    def label(self, chute_id: str) -> str:
        """The bounded metric/log label of a chute: its configured name."""
        ref = self.chutes.get(chute_id)
        return ref.name if ref else "unconfigured"

    # ------------------------------------------------------------ the decision (request path)
    def usable_snapshot(self, now: float) -> Snapshot | None:
        snap = self.snapshot
        if snap is None or snap.age(now) > self.config.stale_seconds:
            return None  # the background tick reports the transition; requests only read
        return snap

    def capability(self, chute_id: str) -> Capability:
        """What the chute can do: its context window and features, as configured (unknown: None)."""
        ref = self.chutes.get(chute_id)
        if ref is None:
            return Capability()
        return Capability(ref.max_model_len, frozenset(ref.features) if ref.features is not None else None)

    def fitting(self, deployment_ids: Sequence[str], needs: Needs) -> Sequence[str]:
        """The deployments whose chute can take a request with ``needs``: those it fits with the
        margin to spare, else those it fits at all (the chute decides); raises
        :class:`NoChuteFits` when none can."""
        strict: list[str] = []
        loose: list[str] = []
        for dep in deployment_ids:
            cap = self.capability(self.chute_id(dep))
            why = unfit(cap, needs)
            if why is None:
                strict.append(dep)
            elif why == "context" and unfit(cap, needs, margin=0.0) is None:
                loose.append(dep)
        if strict or loose:
            return strict or loose
        raise NoChuteFits(self._no_fit(deployment_ids, needs), self.largest_window(deployment_ids))

    def largest_window(self, deployment_ids: Sequence[str]) -> int | None:
        """The largest known context window among these deployments' chutes (None: none known)."""
        windows = [self.capability(self.chute_id(d)).max_model_len for d in deployment_ids]
        known = [w for w in windows if w is not None]
        return max(known) if known else None

    def _no_fit(self, deployment_ids: Sequence[str], needs: Needs) -> str:
        caps = {self.chute_id(d): self.capability(self.chute_id(d)) for d in deployment_ids}
        missing = sorted({f for f in needs.features for c in caps.values() if c.features is not None and f not in c.features})
        if missing and all(unfit(c, needs._replace(prompt_tokens=0, max_tokens=0, min_window=0)) for c in caps.values()):
            return f"no chute of this model group supports {', '.join(missing)}"
        largest = self.largest_window(deployment_ids)
        asked = f"about {needs.prompt_tokens} prompt tokens" + (f" + max_tokens {needs.max_tokens}" if needs.max_tokens else "")
        if needs.min_window and largest is not None and largest < needs.min_window:
            return f"the request is too long for every chute of this model group ({asked}); the largest context window is {largest} tokens"
        return (f"the request is too long for every chute of this model group: it needs {asked} "
                f"({needs.tokens} tokens); the largest context window is {largest} tokens")

    def with_room(self, deployment_ids: Sequence[str], *, failed: Iterable[str] = (), needs: Needs | None = None) -> tuple[str, ...]:
        """The deployments this request may use (not failed, able to take it) whose chute is
        estimated to have a free slot (a slow chute's counts) and no 429 hold. Empty: every one is
        full, and the gateway waits for a slot (ROUTING_WAIT_SECONDS) before it sends; after such
        a wait it picks among these, so the slot that freed is the one taken. Strategies that do
        not estimate answer every deployment (they never wait)."""
        if not self.spec.reads_snapshot:
            return tuple(deployment_ids)
        if needs is not None:
            deployment_ids = self.fitting(deployment_ids, needs)
        now = self.clock()
        skip = frozenset(self.chute_id(d) for d in failed)
        usable = [d for d in deployment_ids if self.chute_id(d) not in skip]
        chutes = tuple(dict.fromkeys(self.chute_id(d) for d in usable))
        if not chutes:
            return ()
        cs = self.candidates(self.usable_snapshot(now), chutes)
        r = float(self.replicas)
        roomy = {cs.ids[i] for i in range(cs.n) if estimate(cs, i, now, r, self.params, self.live.snapshot_version).tier >= 1}
        return tuple(d for d in usable if self.chute_id(d) in roomy)

    def pick(self, deployment_ids: Sequence[str], *, failed: Iterable[str] = (), last_failed: str | None = None,
             call_id: str | None = None, api: str = "chat", group: str = "", affinity_key: int | None = None,
             needs: Needs | None = None) -> str:
        """Choose the deployment for one upstream attempt and open its bookkeeping. The caller
        is the attempt's owner (:class:`~chutes_lb.routing.attempts.UpstreamCall`): it closes the
        attempt with :meth:`close_attempt`.

        ``failed``: deployments or chutes that already failed within this request (never chosen
        again while another chute is available); ``last_failed``: the one whose failure caused
        this pick. ``needs``: what the request needs (context, features): only chutes that can take
        it are candidates (:meth:`fitting`; raises :class:`NoChuteFits` when none can). A pick
        without a ``call_id`` is answered but opens nothing (LiteLLM asks that way outside
        requests, e.g. for token counting)."""
        now = self.clock()
        if needs is not None:
            deployment_ids = self.fitting(deployment_ids, needs)
        by_chute, chute_ids = self._chutes_of(deployment_ids)
        excluded = frozenset(self.chute_id(d) for d in failed) if failed else frozenset()
        snap = self.usable_snapshot(now)
        cands = self.candidates(snap, chute_ids)
        session = None
        if affinity_key is not None and self.uses_sessions:
            def est(i: int) -> Estimate:
                return estimate(cands, i, now, float(self.replicas), self.params, self.live.snapshot_version)

            session = Affinity(self.sessions.order(affinity_key, cands), self.config.affinity_bound,
                               self.sessions.load(cands, now, est), lambda: self.sessions.load(cands, now, est, fresh=True))
        d = decide(cands, self.spec, self.rng, now=now, excluded=excluded, replicas=self.replicas,
                   snapshot_version=self.live.snapshot_version, params=self.params, affinity=session)
        chute = d.chute_id
        if call_id is None:
            return by_chute[chute]
        label = self.label(chute)
        self.metrics.decision(label, d.reason.value, self.strategy, api)
        if self.uses_sessions:
            outcome = (d.affinity or "no_key").split(":", 1)[0]
            self.metrics.affinity(api, outcome)
            self.affinity_counts[outcome] += 1
        if snap is None and self.spec.reads_snapshot:
            self.metrics.fallback(self.snapshot_state if self.snapshot_state != "ok" else "stale")
        if excluded and last_failed is not None and self.chute_id(last_failed) in self.chutes:
            self.metrics.failover(self.label(self.chute_id(last_failed)))  # once, against the chute that just failed
        token = self.live.on_start(chute, now)
        self.ledger.open(call_id, chute, Attempt(token, now, api))
        self.metrics.attempt_started(label)
        self.report.note(group, label, d.reason.value, self.snapshot_state, (self.label(c) for c in excluded),
                         lambda: estimate(cands, d.index, now, float(self.replicas), self.params, self.live.snapshot_version),
                         d.affinity)
        return by_chute[chute]

    def _chutes_of(self, deployment_ids: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
        """Each chute's first deployment among ``deployment_ids``, and the chutes in order; kept
        per list (a model group's list repeats: no walk over it per attempt)."""
        key = deployment_ids if isinstance(deployment_ids, tuple) else tuple(deployment_ids)
        hit = self._chute_maps.get(key)
        if hit is None:
            by_chute: dict[str, str] = {}
            for dep in key:
                by_chute.setdefault(self.chute_id(dep), dep)
            if len(self._chute_maps) > 64:
                self._chute_maps.clear()
            hit = self._chute_maps[key] = (by_chute, tuple(by_chute))
        return hit

    def candidates(self, snap: Snapshot | None, chute_ids: tuple[str, ...]) -> CandidateSet:
        """The candidate set for these chutes under this snapshot, built once per snapshot version."""
        key = (snap.version if snap is not None else None, chute_ids)
        cached = self._candidate_cache.get(key)
        if cached is not None:
            return cached
        cands = []
        for cid in chute_ids:
            ref = self.chutes.get(cid)
            concurrency = ref.concurrency if ref else 1
            stats = snap.chutes.get(cid) if snap is not None else None
            live, remote = self.live.chute(cid), self.remote.setdefault(cid, RemoteCounts())
            if stats is not None:
                self._known_instances[cid] = stats.active_instance_count
                cands.append(Candidate(cid, stats.active_instance_count * concurrency, stats.utilization_current,
                                       stats.utilization_5m, stats.rate_limit_ratio_5m, live, remote))
            else:  # no usable snapshot: last known instances (or 1) x concurrency, live counts only
                instances = max(1, self._known_instances.get(cid, 1))
                cands.append(Candidate(cid, instances * concurrency, None, None, None, live, remote))
        if len(self._candidate_cache) > 32:
            self._candidate_cache.clear()
        built = self._candidate_cache[key] = CandidateSet(cands)
        return built

    # ------------------------------------------------------------ outcomes
    def close_attempt(self, call_id: str, chute: str, outcome: str, *, ttft: float | None = None,
                      tokens: float | None = None, prompt: tuple[float, float] | None = None) -> None:
        """Close one attempt (``chute``: its chute or deployment id) exactly once: live
        bookkeeping, in-flight gauge, outcome metrics; a second close of the same attempt is
        ignored. ``prompt``: (prompt tokens, cached tokens) of a successful response, when known.
        Called by the attempt's owner (:class:`~chutes_lb.routing.attempts.UpstreamCall`)."""
        self._end(call_id, self.chute_id(chute), outcome, self.clock(), ttft, tokens, prompt)

    def _end(self, call_id: str, chute: str, outcome: str, now: float, ttft: float | None = None,
             tokens: float | None = None, prompt: tuple[float, float] | None = None) -> None:
        attempt = self.ledger.close(call_id, chute)
        if attempt is None:
            return
        if self.on_room is not None:
            self.on_room()  # a slot freed: a request held for one may go
        uncached = prompt[0] - prompt[1] if prompt is not None else None
        if ttft is not None:
            self.live.on_first_token(attempt.token, attempt.started + ttft, uncached)
        if prompt is not None:
            self.metrics.prompt_tokens(attempt.api, self.label(chute), prompt[1], uncached or 0.0)
        self.live.on_end(attempt.token, now, outcome, tokens)
        latency = max(0.0, now - attempt.started) if outcome == "success" else None
        self.metrics.attempt_ended(self.label(chute), outcome, latency, ttft, attempt.api)

    def sweep(self) -> None:
        """Forget attempts whose owner vanished without closing them (a bug or a killed task):
        bounded memory and honest in-flight counts, each counted as a ``timeout``."""
        now = self.clock()
        cutoff = now - self.config.request_timeout_seconds
        for call_id, chute in self.ledger.older_than(cutoff):
            self._end(call_id, chute, "timeout", now)

    # ------------------------------------------------------------ snapshot (background)
    def adopt(self, snap: Snapshot) -> None:
        """A snapshot was read; a new version is adopted (open requests become 'old')."""
        if self.snapshot is None or snap.version != self.snapshot.version:
            self.snapshot = snap
            self.live.on_snapshot(snap.version, self.clock())
        self.snapshot_checked = True
        self.tick()

    def snapshot_missing(self) -> None:
        self.snapshot = None
        self.snapshot_checked = True
        self._set_state("missing")

    def snapshot_invalid(self, error: str) -> None:
        log.error("routing snapshot unreadable: %s", error)
        self.snapshot = None
        self.snapshot_checked = True
        self._set_state("invalid")

    def snapshot_unreachable(self) -> None:
        self.snapshot_checked = True  # ready anyway: routing works on live signals alone
        self._set_state("redis_unreachable")

    def tick(self) -> None:
        """Redis reachable: the held snapshot is ok or has gone stale (the one place that decides)."""
        now = self.clock()
        if self.snapshot is None:
            if self.snapshot_state not in ("missing", "invalid"):
                self._set_state("missing")
        else:
            self._set_state("stale" if self.snapshot.age(now) > self.config.stale_seconds else "ok")
        self.metrics.snapshot(self.snapshot.age(now) if self.snapshot else None, self.snapshot_state == "ok")

    def _set_state(self, state: str) -> None:
        if state == self.snapshot_state:
            return
        previous, self.snapshot_state = self.snapshot_state, state
        if state == "ok":
            log.info("routing snapshot usable again (was %s): routing on utilization + live signals", previous)
        else:
            log.warning("routing snapshot %s (was %s): routing on live signals alone until it recovers", state, previous)

    # ------------------------------------------------------------ in-flight exchange (background)
    def export_counts(self) -> dict[str, dict[str, float]]:
        return self.live.export_counts(self.clock())

    def exchanged(self, entries: Iterable[tuple[str, Mapping[str, Mapping[str, float]], float]]) -> None:
        """The other workers' exports arrived (``(worker id, counts, measured_at)``, own included or not)."""
        self.replicas = exchange(entries, self.worker_id, self.remote, self.live)
        if self.on_room is not None:
            self.on_room()  # the other workers' counts moved: a held request looks again

    def exchange_failed(self) -> None:
        aggregate_remote((), into=self.remote)  # unknown, not zero: the shared counts go stale

    # ------------------------------------------------------------ estimates (background, /info)
    def refresh_estimates(self) -> None:
        """Every configured chute's estimate and slowness, kept fresh for /info and the gauges
        whatever the log level (the in-flight loop calls this every INFLIGHT_PUBLISH_SECONDS)."""
        now = self.clock()
        cs = self.candidates(self.usable_snapshot(now), tuple(self.chutes))
        version = self.live.snapshot_version
        self.estimates = {cid: estimate(cs, i, now, float(self.replicas), self.params, version) for i, cid in enumerate(cs.ids)}
        self.estimated_at = now
        for cid, e in self.estimates.items():
            self.metrics.chute_estimate(self.label(cid), -1.0 if e.penalized else e.free, self.live.chute(cid).slowness(now, self.params.speed_memory))

    def penalty_active(self, chute_id: str) -> bool:
        """The 429 hold the decision applies right now (the same rule as the decision's)."""
        cs = self.candidates(self.usable_snapshot(self.clock()), (chute_id,))
        return penalty_active(self.live.chute(chute_id), self.clock(), self.live.snapshot_version, cs.cap[0], self.params)

    def seconds_until_free(self, chute_ids: Iterable[str]) -> float:
        """When a slot of these chutes is expected to free, in whole seconds (1..60): the
        ``Retry-After`` of a 429 or 503 the proxy sends without one from the upstream. The
        shortest typical request time (latency EWMA, else the default) over the chute's slots."""
        now = self.clock()
        ids = tuple(c for c in chute_ids if c in self.chutes) or tuple(self.chutes)
        cs = self.candidates(self.usable_snapshot(now), ids)
        best = math.inf
        for i, cid in enumerate(cs.ids):
            latency = self.live.chute(cid).latency_ewma or self.params.default_latency
            best = min(best, latency / max(cs.cap[i], 1.0))
        return float(min(60, max(1, math.ceil(best)))) if math.isfinite(best) else 1.0

    # ------------------------------------------------------------ summary
    def summary_line(self) -> str | None:
        """The period's summary (each group's share per chute, reasons), or None when nothing was routed."""
        snap = self.snapshot
        age = f"{snap.age(self.clock()):.0f}s" if snap else "n/a"
        return self.report.summary(f"{self.config.summary_seconds:.0f}s, worker {self.worker_id}",
                                   f"snapshot {self.snapshot_state} v{snap.version if snap else '-'} age {age}")
