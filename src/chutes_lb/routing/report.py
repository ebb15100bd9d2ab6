"""What the routing core says in the log: a readable line per decision (up to
``DECISION_LOG_BUDGET`` per summary period at INFO, every one at DEBUG) and a summary line per
period with each model group's share per chute and the reasons. Pure formatting and counting;
never a key or a prompt.

Must not import: Redis, HTTP clients, LiteLLM, prometheus_client, or anything in ``chutes_lb.proxy``.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Iterable

from chutes_lb.routing.estimate import Estimate

__all__ = ["DecisionReport", "DECISION_LOG_BUDGET"]

log = logging.getLogger("chutes_lb.routing")

DECISION_LOG_BUDGET = 5  # per-decision INFO lines per summary period; the rest are summarised


class DecisionReport:
    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self._period: Counter[tuple[str, str, str]] = Counter()  # (group, chute label, reason)
        self._logged = 0

    def note(self, group: str, label: str, reason: str, snapshot_state: str, failed: Iterable[str],
             est: Callable[[], Estimate], affinity: str | None = None) -> None:
        self._period[(group, label, reason)] += 1
        if self._logged >= DECISION_LOG_BUDGET and not log.isEnabledFor(logging.DEBUG):
            return
        self._logged += 1
        e = est()
        room = "429 hold" if e.penalized else f"{e.free:.1f} slots{' (slow)' if e.slow else ''}"
        failed = sorted(failed)
        after = f", after failure of {', '.join(failed)}" if failed else ""
        if affinity is None:
            session = ""
        elif affinity == "hit":
            session = ", affinity"
        elif affinity.startswith("spill"):
            why = affinity.partition(":")[2].removeprefix("dropped_")
            session = f", affinity spill (first chute {why})" if why else ", affinity spill"
        else:
            session = f", affinity dropped ({affinity.removeprefix('dropped_')})"
        log.info("routing -> %s (group %s, strategy %s, reason %s, est. headroom %s, snapshot %s%s%s)", label, group or "-",
                 self.strategy, reason, room, snapshot_state, session, after)

    def summary(self, head: str, tail: str) -> str | None:
        """The period's summary line (``head``: period and worker; ``tail``: snapshot state), or
        None when nothing was routed; starts a new period."""
        counts, self._period = self._period, Counter()
        self._logged = 0
        if not counts:
            return None
        total = sum(counts.values())
        per_group: dict[str, Counter[str]] = {}
        per_reason: Counter[str] = Counter()
        for (group, label, reason), n in counts.items():
            per_group.setdefault(group or "-", Counter())[label] += n
            per_reason[reason] += n
        parts = "; ".join(
            f"{group} {sum(c.values())}: " + ", ".join(f"{label} {n} ({100 * n / sum(c.values()):.0f}%)" for label, n in c.most_common())
            for group, c in sorted(per_group.items(), key=lambda kv: -sum(kv[1].values())))
        reasons = ", ".join(f"{reason}={n}" for reason, n in per_reason.most_common())
        return f"routing summary ({head}): {total} requests -> {parts}; reasons {reasons}; {tail}"
