"""The in-flight exchange between workers: the other workers' counts per chute. Pure: no I/O.

Each worker publishes :meth:`chutes_lb.routing.live.LiveState.export_counts` with the time it
measured them; :func:`exchange` folds the other workers' exports into per-chute
:class:`RemoteCounts` (long lived, updated in place) that the estimate reads. The proxy's
in-flight loop (:mod:`chutes_lb.routing.sharing`) and the DES both call :func:`exchange`, so the
simulation measures the production path.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from chutes_lb.routing.live import LiveState

__all__ = ["RemoteCounts", "aggregate_remote", "exchange"]


@dataclass(slots=True, eq=False)
class RemoteCounts:
    """Other workers' counts for one chute (sum of their exports) and when they were measured."""

    in_flight: int = 0
    new_inflight: int = 0
    last_429_at: float = -math.inf  # latest 429 any other worker saw on this chute (same version)
    own_started_mark: int = -1  # this worker's started_total at the time the remote counts were measured
    measured_at: float = -math.inf  # oldest measurement time among the summed exports

    def fresh(self, now: float, max_age: float) -> bool:
        return now - self.measured_at <= max_age


def aggregate_remote(
    exports: Iterable[tuple[Mapping[str, Mapping[str, float]], float]],
    into: dict[str, RemoteCounts] | None = None,
    mark_from: LiveState | None = None,
) -> dict[str, RemoteCounts]:
    """Sum other workers' exports ``(counts, measured_at)`` into per-chute :class:`RemoteCounts`.

    ``into`` is updated in place (so decisions holding references see the new values) and
    returned; chutes absent from every export are reset to zero. Malformed values count as 0.
    ``mark_from`` (this worker's own :class:`LiveState`) records its ``started_total`` per chute as
    it was when the remote counts were measured, so the decision can add ``(R - 1) x own starts
    since`` for the others' starts the counts cannot show yet."""
    out: dict[str, RemoteCounts] = {} if into is None else into
    for rc in out.values():
        rc.in_flight = 0
        rc.new_inflight = 0
        rc.last_429_at = -math.inf
        rc.measured_at = math.inf
    oldest = math.inf
    for counts, measured_at in exports:
        try:
            t = float(measured_at)
        except (TypeError, ValueError):
            continue
        if t != t:
            continue
        oldest = min(oldest, t)
        for cid, d in counts.items():
            rc = out.get(cid)
            if rc is None:
                rc = out[cid] = RemoteCounts(measured_at=math.inf)
            rc.in_flight += _nonneg_int(d.get("in_flight"))
            rc.new_inflight += _nonneg_int(d.get("new_inflight"))
            l429 = _float(d.get("last_429_at"))
            if l429 > rc.last_429_at:
                rc.last_429_at = l429
            if t < rc.measured_at:
                rc.measured_at = t
    # A chute missing from an export means that worker has nothing open there: zero counts are
    # information as fresh as the oldest export. With no exports at all, nothing is fresh.
    for cid, rc in out.items():
        if rc.measured_at == math.inf:
            rc.measured_at = oldest if oldest != math.inf else -math.inf
        if mark_from is not None:
            mine = mark_from.chutes.get(cid)
            rc.own_started_mark = 0 if mine is None else mine.started_by(rc.measured_at)
    return out


def exchange(entries: Iterable[tuple[str, Mapping[str, Mapping[str, float]], float]], own_id: str,
             into: dict[str, RemoteCounts], live: LiveState) -> int:
    """One round of the in-flight exchange for the worker ``own_id``: the other workers' entries
    ``(worker_id, counts, measured_at)`` are summed into ``into`` (see :func:`aggregate_remote`,
    which also marks this worker's own starts now). Returns R = 1 + the number of other workers."""
    others = [(counts, ts) for worker, counts, ts in entries if worker != own_id]
    aggregate_remote(others, into=into, mark_from=live)
    return 1 + len(others)


def _float(v: object) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -math.inf
    return f if f == f else -math.inf


def _nonneg_int(v: object) -> int:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    if f != f or f <= 0.0 or f == math.inf:
        return 0
    return int(f)
