"""The :class:`Poller`: one poll cycle (fetch -> parse -> filter -> atomic write) and the loop
around it, with the fetch, the store and the clock injected so tests drive it deterministically.

Decisions:
- A failed cycle never touches the stored snapshot: the last good one stays until its TTL.
- No configured chute in a valid body: write nothing, count ``no_configured_chutes``.
- Write refused because another poller stored a newer API timestamp: count ``rolled_back``;
  the cycle still counts as healthy (Redis holds fresher data than ours) and does not back off.
- Backoff after failures: ``min(interval, base * 2**(n-1)) * U(0.5, 1)`` (equal jitter from an
  injected rng), base = ``min(1, interval/4)``. The cap is the interval: a failing API is never
  polled LESS often than a healthy one (the data is what routing runs on), and only the first
  few retries are faster. Successful cycles are paced start-to-start every ``interval``.
- Redis write errors count ``redis``; the next cycle fetches afresh and writes again.
- Configured chutes missing from the data, and a configured concurrency the API contradicts,
  are logged once per change (:class:`~chutes_lb.poller.watch.ChuteWatch`).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from chutes_lb.fleet import ChuteRef
from chutes_lb.poller.metrics import PollerMetrics
from chutes_lb.poller.parse import PollError, parse_utilization
from chutes_lb.poller.watch import ChuteWatch
from chutes_lb.snapshot import SCHEMA_VERSION, Snapshot, SnapshotStore

__all__ = ["Poller", "PollOutcome", "backoff_delay"]

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[bytes]]

SUMMARY_EVERY_SECONDS = 300.0


def backoff_delay(failures: int, interval: float, rng: random.Random) -> float:
    """Delay before the next attempt after ``failures`` consecutive failed cycles (>= 1)."""
    base = min(1.0, interval / 4)
    ceiling = min(interval, base * 2 ** min(failures - 1, 30))
    return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class PollOutcome:
    ok: bool  # healthy cycle (written, or superseded by a newer snapshot)
    version: int | None = None
    error: str | None = None  # PollError kind
    detail: str = ""


class Poller:
    def __init__(self, chutes: Sequence[ChuteRef], fetch: Fetch, store: SnapshotStore, metrics: PollerMetrics, *,
                 interval: float, healthy_seconds: float, poller_id: str,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 watch: ChuteWatch | None = None) -> None:
        self.chutes = list(chutes)
        self.fetch = fetch
        self.store = store
        self.metrics = metrics
        self.interval = interval
        self.healthy_seconds = healthy_seconds
        self.poller_id = poller_id
        self.clock = clock
        self.rng = rng or random.Random()
        self.failures = 0
        self.last_success: float | None = None
        self.last_error: PollOutcome | None = None
        self._state = "starting"  # starting | healthy | failing
        self._counts = {"ok": 0, "failed": 0}
        self._last_summary = clock()
        self.watch = watch or ChuteWatch(self.chutes, on_missing=lambda name: metrics.missing_polls.labels(name).inc(),
                                         on_concurrency=lambda name, value: metrics.api_concurrency.labels(name).set(value))

    # ------------------------------------------------------------ one cycle
    async def poll_once(self) -> PollOutcome:
        started = self.clock()
        try:
            outcome = await self._cycle()
        except PollError as exc:
            outcome = PollOutcome(False, error=exc.kind, detail=exc.detail)
        except Exception as exc:  # a bug must not end the loop; it is logged loudly instead
            log.exception("poll cycle crashed")
            outcome = PollOutcome(False, detail=f"{type(exc).__name__}: {exc}")
        self.metrics.poll_duration.observe(max(0.0, self.clock() - started))
        if outcome.error:
            self.metrics.error(outcome.error)
        self._record(outcome)
        return outcome

    async def _cycle(self) -> PollOutcome:
        body = await self.fetch()  # raises PollError
        fetched_at = self.clock()
        result = parse_utilization(body, self.chutes)
        self.metrics.entries_parsed.inc(result.parsed)
        self.metrics.entries_skipped.inc(result.skipped)
        self.watch.seen(result.chutes)
        if not result.chutes:
            raise PollError("no_configured_chutes", f"{result.total} entries, {result.skipped} skipped")
        snapshot = Snapshot(SCHEMA_VERSION, 0, fetched_at, result.api_timestamp, result.chutes, self.poller_id)
        try:
            version = await self.store.write(snapshot)
        except Exception as exc:  # redis errors of any kind; the loop must live on
            raise PollError("redis", f"{type(exc).__name__}: {exc}") from None
        self.metrics.written(version, fetched_at, result.chutes)
        await self.watch.after_success()
        log.debug("poll: %d entries, %d kept, %d skipped, api_timestamp=%s, version=%s",
                  result.total, len(result.chutes), result.skipped, result.api_timestamp or "-", version)
        if version is None:
            return PollOutcome(True, error="rolled_back", detail="a snapshot with a newer API timestamp is stored")
        return PollOutcome(True, version=version)

    def _record(self, outcome: PollOutcome) -> None:
        now = self.clock()
        if outcome.ok:
            self.failures = 0
            self.last_success = now
            self._counts["ok"] += 1
            if self._state != "healthy":
                log.info("polling healthy (%s), snapshot version %s", "recovered" if self._state == "failing" else "first success", outcome.version)
            self._state = "healthy"
        else:
            self.failures += 1
            self.last_error = outcome
            self._counts["failed"] += 1
            log.debug("poll failed: %s %s", outcome.error, outcome.detail)
            if self._state != "failing":
                log.info("polling failing: %s %s", outcome.error, outcome.detail)
            self._state = "failing"
        if now - self._last_summary >= SUMMARY_EVERY_SECONDS:
            log.info("summary: %d ok, %d failed polls in the last %.0fs; state %s",
                     self._counts["ok"], self._counts["failed"], now - self._last_summary, self._state)
            self._counts = {"ok": 0, "failed": 0}
            self._last_summary = now

    # ------------------------------------------------------------ health
    def health(self) -> tuple[bool, dict[str, object]]:
        now = self.clock()
        body: dict[str, object] = {"state": self._state, "poller_id": self.poller_id}
        if self.last_error is not None:
            body["last_error"] = self.last_error.error
        if self.last_success is None:
            body["reason"] = "no successful poll yet"
            return False, body
        age = now - self.last_success
        body["last_success_age_seconds"] = round(age, 3)
        if age > self.healthy_seconds:
            body["reason"] = f"last successful poll and write {age:.1f}s ago (> {self.healthy_seconds:g}s)"
            return False, body
        return True, body

    # ------------------------------------------------------------ loop
    def next_delay(self, outcome: PollOutcome, duration: float) -> float:
        if outcome.ok:
            return max(0.0, self.interval - duration)
        return backoff_delay(self.failures, self.interval, self.rng)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; an in-flight cycle is cancelled at once on stop."""
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                started = time.monotonic()
                cycle = asyncio.ensure_future(self.poll_once())
                await asyncio.wait({cycle, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not cycle.done():
                    cycle.cancel()
                    await asyncio.gather(cycle, return_exceptions=True)
                    break
                outcome = cycle.result()
                delay = self.next_delay(outcome, time.monotonic() - started)
                try:
                    await asyncio.wait_for(asyncio.shield(stop_wait), delay)
                except TimeoutError:
                    pass
        finally:
            stop_wait.cancel()
            await asyncio.gather(stop_wait, return_exceptions=True)
