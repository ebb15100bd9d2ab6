"""What the poller says about the configured chutes themselves, once per change (pure; the
fetch of chute records is injected):

- a configured chute absent from the utilization data (a wrong UUID, a chute deleted or renamed
  upstream): one log line when it goes missing and one when it is back, counted per poll in
  ``chutes_lb_poller_chute_missing_polls_total{chute}``;
- a configured ``model_info.concurrency`` that differs from the one the Chutes API reports
  (``GET /chutes/{id}``, the authoritative per-instance concurrency, checked every
  ``every`` successful polls): one warning per chute and value. Routing multiplies active
  instances by the configured figure, so a config that says 8 for a chute that serves 4 earns
  429s.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from chutes_lb.fleet import ChuteRef

__all__ = ["ChuteWatch"]

log = logging.getLogger("chutes_lb.poller")

FetchRecord = Callable[[str], Awaitable[Mapping[str, Any] | None]]


class ChuteWatch:
    def __init__(self, chutes: Sequence[ChuteRef], fetch_record: FetchRecord | None = None, every: int = 20,
                 on_missing: Callable[[str], None] = lambda name: None,
                 on_concurrency: Callable[[str, int], None] = lambda name, value: None) -> None:
        self.chutes = list(chutes)
        self.fetch_record = fetch_record
        self.every = every
        self.on_missing = on_missing
        self.on_concurrency = on_concurrency
        self.missing: set[str] = set()
        self.reported_concurrency: dict[str, int] = {}
        self._polls = 0

    def seen(self, present: Iterable[str]) -> list[str]:
        """After a poll: the configured chutes in the data are ``present``; returns the log lines."""
        present = set(present)
        lines = []
        for ref in self.chutes:
            if ref.chute_id in present:
                if ref.chute_id in self.missing:
                    self.missing.discard(ref.chute_id)
                    lines.append(f"chute {ref.name} ({ref.chute_id}) is back in the utilization data")
                continue
            self.on_missing(ref.name)
            if ref.chute_id not in self.missing:
                self.missing.add(ref.chute_id)
                lines.append(f"chute {ref.name} ({ref.chute_id}) is configured but missing from the utilization data "
                             "(wrong UUID, or the chute is gone): routing uses its last known capacity and live signals only")
        for line in lines:
            log.warning("%s", line)
        return lines

    def compare(self, ref: ChuteRef, record: Mapping[str, Any] | None) -> str | None:
        """The warning for one chute's API record, once per (chute, API value)."""
        value = record.get("concurrency") if isinstance(record, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return None
        self.on_concurrency(ref.name, value)
        if value == ref.concurrency:
            self.reported_concurrency.pop(ref.chute_id, None)
            return None
        if self.reported_concurrency.get(ref.chute_id) == value:
            return None
        self.reported_concurrency[ref.chute_id] = value
        line = (f"chute {ref.name} ({ref.chute_id}): the Chutes API says concurrency {value} per instance, the config "
                f"says {ref.concurrency} (model_info.concurrency); routing uses the config's: fix it to match")
        log.warning("%s", line)
        return line

    async def after_success(self) -> list[str]:
        """Every ``every`` successful polls (the first included): compare concurrency with the API."""
        self._polls += 1
        if self.fetch_record is None or (self._polls - 1) % self.every:
            return []
        records = await asyncio.gather(*(self._fetch(ref) for ref in self.chutes))
        return [line for ref, record in zip(self.chutes, records) if (line := self.compare(ref, record))]

    async def _fetch(self, ref: ChuteRef) -> Mapping[str, Any] | None:
        try:
            return await self.fetch_record(ref.chute_id)  # type: ignore[misc]
        except Exception as exc:  # a missing record endpoint must not fail the poll
            log.debug("chute record of %s not fetched: %r", ref.name, exc)
            return None
