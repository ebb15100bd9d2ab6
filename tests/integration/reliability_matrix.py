"""Fault-matrix bookkeeping for the reliability tests: every request sent under a fault is
classified from what the *client* saw, and the per-row figures go to
``benchmarks/out/reliability-matrix.json`` (merged row by row, so several test modules and runs
add to one file; RELIABILITY.md quotes it).

Outcomes of one request:
- ``ok``: 200 with a completion body; for a stream, content chunks and a clean end
  (``data: [DONE]`` or a ``finish_reason``), no error event.
- ``failed_clear``: an HTTP error status with an OpenAI-style ``{"error": {"message": ...}}``
  body, or a stream that carries an ``error`` event (``data: {"error": ...}``).
- ``failed_unclear``: an answer came, but not a clear one: an error status without an
  OpenAI-style body, or a stream that ended (connection closed) without ``[DONE]``,
  ``finish_reason`` or an error event (a silent truncation).
- ``lost``: no answer within the client's bound (timeout = a hang) or the connection failed
  before any answer.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import httpx

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("RELIABILITY_MATRIX_OUT", ROOT / "benchmarks" / "out" / "reliability-matrix.json"))
OUTCOMES = ("ok", "failed_clear", "failed_unclear", "lost")


@dataclass
class Result:
    outcome: str
    status: int
    chute: str | None = None
    detail: str = ""
    seconds: float = 0.0


def _is_openai_error(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and bool(body["error"].get("message"))


async def one_request(client: httpx.AsyncClient, body: dict[str, Any], path: str = "/v1/chat/completions") -> Result:
    """Send one request and classify what came back (never raises)."""
    t0 = time.monotonic()
    stream = bool(body.get("stream"))
    try:
        if not stream:
            r = await client.post(path, json=body)
            chute = r.headers.get("x-litellm-model-id")
            try:
                data = r.json()
            except ValueError:
                data = None
            if r.status_code == 200 and isinstance(data, dict) and data.get("choices"):
                return Result("ok", 200, chute, seconds=time.monotonic() - t0)
            outcome = "failed_clear" if r.status_code >= 400 and _is_openai_error(data) else "failed_unclear"
            return Result(outcome, r.status_code, chute, r.text[:300], time.monotonic() - t0)
        async with client.stream("POST", path, json=body) as r:
            chute = r.headers.get("x-litellm-model-id")
            if r.status_code != 200:
                raw = await r.aread()
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                outcome = "failed_clear" if _is_openai_error(data) else "failed_unclear"
                return Result(outcome, r.status_code, chute, raw[:300].decode(errors="replace"), time.monotonic() - t0)
            done = finished = False
            error: str | None = None
            pieces = 0
            try:
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        continue
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        error = error or f"unparseable event {payload[:100]!r}"
                        continue
                    if isinstance(event, dict) and "error" in event:
                        error = json.dumps(event["error"])[:300]
                        continue
                    for choice in event.get("choices") or []:
                        pieces += 1
                        if choice.get("finish_reason"):
                            finished = True
            except httpx.TimeoutException as exc:
                return Result("lost", 200, chute, f"stream hung: {type(exc).__name__} after {pieces} chunks", time.monotonic() - t0)
            except httpx.HTTPError as exc:  # connection closed mid-body (chunked encoding incomplete)
                if error:
                    return Result("failed_clear", 200, chute, error, time.monotonic() - t0)
                return Result("failed_unclear", 200, chute, f"stream broken: {type(exc).__name__} after {pieces} chunks", time.monotonic() - t0)
            if error:
                return Result("failed_clear", 200, chute, error, time.monotonic() - t0)
            if done or finished:
                return Result("ok", 200, chute, seconds=time.monotonic() - t0)
            return Result("failed_unclear", 200, chute, f"stream ended silently after {pieces} chunks", time.monotonic() - t0)
    except httpx.TimeoutException as exc:
        return Result("lost", -1, None, f"hang: {type(exc).__name__}", time.monotonic() - t0)
    except httpx.HTTPError as exc:
        return Result("lost", -1, None, f"transport: {type(exc).__name__}: {exc}"[:300], time.monotonic() - t0)


async def _many(url: str, key: str, bodies: list[dict[str, Any]], timeout: float, path: str) -> list[Result]:
    limits = httpx.Limits(max_connections=len(bodies) + 5, max_keepalive_connections=len(bodies) + 5)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout, limits=limits) as client:
        return list(await asyncio.gather(*(one_request(client, b, path) for b in bodies)))


def send(url: str, key: str, bodies: list[dict[str, Any]], timeout: float = 60.0, path: str = "/v1/chat/completions") -> list[Result]:
    """All ``bodies`` concurrently; one classified :class:`Result` each."""
    return asyncio.run(_many(url, key, bodies, timeout, path))


@dataclass
class Row:
    """One fault of the matrix: what was sent and what the clients saw."""

    fault: str
    test: str
    results: list[Result] = field(default_factory=list)
    note: str = ""

    def add(self, results: Iterable[Result]) -> list[Result]:
        results = list(results)
        self.results.extend(results)
        return results

    def counts(self) -> Counter[str]:
        return Counter(r.outcome for r in self.results)

    def figures(self) -> dict[str, Any]:
        c = self.counts()
        statuses = Counter(str(r.status) for r in self.results if r.outcome != "ok")
        return {
            "fault": self.fault, "test": self.test, "sent": len(self.results),
            **{k: c.get(k, 0) for k in OUTCOMES},
            "error_statuses": dict(statuses),
            "max_seconds": round(max((r.seconds for r in self.results), default=0.0), 2),
            "examples": sorted({r.detail for r in self.results if r.outcome != "ok" and r.detail})[:3],
            "note": self.note,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self) -> dict[str, Any]:
        """Merge this row into the JSON file (keyed by fault) and return its figures."""
        figures = self.figures()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(OUT.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("rows", {})[self.fault] = figures
        data["updated_at"] = figures["recorded_at"]
        tmp = OUT.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(OUT)
        return figures

    def summary(self) -> str:
        f = self.figures()
        return f"{self.fault}: sent {f['sent']} ok {f['ok']} clear {f['failed_clear']} unclear {f['failed_unclear']} lost {f['lost']} {f['error_statuses']} {f['examples']}"
