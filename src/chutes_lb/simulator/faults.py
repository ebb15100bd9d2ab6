"""Runtime fault controls: what ``POST /admin/...`` may change, validated (pure).

A chute's mutable state is :class:`ChuteControls` (capacity, prefix cache size, prefill
rate, context length, plus faults; ``reject_share`` is the rate-limit mode: that share of
requests answers 429 at any load, see ``service.py``). ``apply_chute_patch``
validates a JSON body (any subset of the fields) and returns the new controls or raises
:class:`PatchError` with a message for the 400 body. ``validate_utilization_patch`` does the
same for the utilization endpoint's fault mode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ChuteControls", "PatchError", "apply_chute_patch", "validate_utilization_patch", "UTILIZATION_MODES"]

UTILIZATION_MODES = ("normal", "garbage", "not_list", "status", "slow", "truncated", "huge", "bad_entries")


class PatchError(ValueError):
    """An invalid admin request body; the message goes to the client."""


@dataclass(frozen=True)
class ChuteControls:
    instances: int
    concurrency: int
    speed: float = 1.0
    ttft_scale: float = 1.0
    error_rate: float = 0.0
    error_status: int = 500
    hang: bool = False
    cut_after_tokens: int | None = None
    reset_rate: float = 0.0
    reject_share: float = 0.0
    prefill_rate: float = 10000.0
    cache_tokens: int = 500000
    context_length: int = 131072

    @property
    def capacity(self) -> int:
        return self.instances * self.concurrency


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _check(name: str, value: Any) -> Any:
    if name == "instances":
        if not _is_int(value) or value < 0:
            raise PatchError("instances must be an integer >= 0")
    elif name == "concurrency":
        if not _is_int(value) or value <= 0:
            raise PatchError("concurrency must be an integer > 0")
    elif name in ("speed", "ttft_scale"):
        if not _is_num(value) or value <= 0:
            raise PatchError(f"{name} must be a number > 0")
        value = float(value)
    elif name == "prefill_rate":
        if not _is_num(value) or value <= 0:
            raise PatchError("prefill_rate must be a number > 0 (tokens/s)")
        value = float(value)
    elif name in ("cache_tokens", "context_length"):
        if not _is_int(value) or value < (0 if name == "cache_tokens" else 1):
            raise PatchError(f"{name} must be an integer >= {0 if name == 'cache_tokens' else 1}")
    elif name in ("error_rate", "reset_rate", "reject_share"):
        if not _is_num(value) or not 0 <= value <= 1:
            raise PatchError(f"{name} must be a number between 0 and 1")
        value = float(value)
    elif name == "error_status":
        if not _is_int(value) or not 400 <= value <= 599:
            raise PatchError("error_status must be an integer 400..599")
    elif name == "hang":
        if not isinstance(value, bool):
            raise PatchError("hang must be true or false")
    elif name == "cut_after_tokens":
        if value is not None and (not _is_int(value) or value < 0):
            raise PatchError("cut_after_tokens must be an integer >= 0 or null")
    else:
        raise PatchError(f"unknown field {name!r}")
    return value


def apply_chute_patch(controls: ChuteControls, body: Any) -> ChuteControls:
    if not isinstance(body, dict):
        raise PatchError("body must be a JSON object")
    return replace(controls, **{k: _check(k, v) for k, v in body.items()})


def validate_utilization_patch(body: Any) -> dict[str, Any]:
    """Return the validated fields of a ``POST /admin/utilization`` body."""
    if not isinstance(body, dict):
        raise PatchError("body must be a JSON object")
    unknown = set(body) - {"mode", "status", "delay_seconds", "size_bytes", "refresh_seconds"}
    if unknown:
        raise PatchError(f"unknown field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if "mode" in body:
        if body["mode"] not in UTILIZATION_MODES:
            raise PatchError("mode must be one of " + ", ".join(UTILIZATION_MODES))
        out["mode"] = body["mode"]
    if "status" in body:
        if not _is_int(body["status"]) or not 100 <= body["status"] <= 599:
            raise PatchError("status must be an integer 100..599")
        out["status"] = body["status"]
    if "delay_seconds" in body:
        if not _is_num(body["delay_seconds"]) or body["delay_seconds"] < 0:
            raise PatchError("delay_seconds must be a number >= 0")
        out["delay_seconds"] = float(body["delay_seconds"])
    if "size_bytes" in body:
        if not _is_int(body["size_bytes"]) or not 0 <= body["size_bytes"] <= 512 * 1024 * 1024:
            raise PatchError("size_bytes must be an integer 0..536870912")
        out["size_bytes"] = body["size_bytes"]
    if "refresh_seconds" in body:
        if not _is_num(body["refresh_seconds"]) or body["refresh_seconds"] <= 0:
            raise PatchError("refresh_seconds must be a number > 0")
        out["refresh_seconds"] = float(body["refresh_seconds"])
    if out.get("mode") == "status" and "status" not in out:
        out["status"] = 500
    return out
