"""Runtime fault controls: what ``POST /admin/...`` may change, validated (pure).

A chute's mutable state is :class:`ChuteControls` (capacity, prefix cache size, prefill
rate, context length, plus faults; ``reject_share`` is the rate-limit mode: that share of
requests answers 429 at any load, see ``service.py``). The account's is
:class:`AccountControls` (the same injected errors for every chute, the quota, the rate-limit
headers). ``apply_chute_patch`` / ``apply_account_patch`` validate a JSON body (any subset of
the fields) and return the new controls or raise :class:`PatchError` with a message for the 400
body. ``validate_utilization_patch`` does the same for the utilization endpoint's fault mode.

Injected errors (``error_rate`` of the requests): with ``error_kind`` set, one of Chutes' error
classes (:data:`ERROR_KINDS`, shared/reference/chutes-api.md "Error classes") with its status and
body; without it, ``error_status`` with Chutes' body for that status where there is one.
Texts from the public chutes-api source, except ``daily_limit`` (its wording is inferred) and
the place of ``quota_reset_timestamp`` in the 402 body (top level, next to ``detail``: inferred).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

__all__ = ["ChuteControls", "AccountControls", "PatchError", "ERROR_KINDS", "apply_chute_patch", "apply_account_patch",
           "error_for", "validate_utilization_patch", "UTILIZATION_MODES"]

UTILIZATION_MODES = ("normal", "garbage", "not_list", "status", "slow", "truncated", "huge", "bad_entries")
QUOTA_MESSAGE = "Quota exceeded and account balance is $0.0, please pay with fiat or send tao to the wallet"
#: Chutes' error classes: kind -> (status, ``detail``); ``{chute_id}`` is filled in.
ERROR_KINDS: dict[str, tuple[int, str]] = {
    "infra_overload": (429, "Infrastructure is at maximum capacity, try again later"),
    "maintenance": (429, "model is under maintenance"),
    "spam": (429, "Stop spamming this prompt, please..."),
    "daily_limit": (429, "Daily request limit reached for this account (free models: 100 requests per day), try again after the reset"),
    "quota": (402, QUOTA_MESSAGE),
    "no_instances": (503, "No instances available (yet) for chute_id={chute_id}"),
    "no_infrastructure": (500, "No infrastructure available to serve request"),
}
_KIND_OF_STATUS = {429: "infra_overload", 402: "quota", 503: "no_instances", 500: "no_infrastructure"}


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
    error_kind: str | None = None  # one of ERROR_KINDS: what error_rate answers (else error_status)

    @property
    def capacity(self) -> int:
        return self.instances * self.concurrency


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _optional_count(name: str, value: Any) -> None:
    if value is not None and (not _is_int(value) or value < 0):
        raise PatchError(f"{name} must be an integer >= 0 or null")


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
    elif name == "error_kind":
        if value is not None and value not in ERROR_KINDS:
            raise PatchError("error_kind must be null or one of " + ", ".join(ERROR_KINDS))
    elif name == "hang":
        if not isinstance(value, bool):
            raise PatchError("hang must be true or false")
    elif name == "cut_after_tokens":
        _optional_count(name, value)
    else:
        raise PatchError(f"unknown field {name!r}")
    return value


def _patched(controls: Any, body: Any, check: Callable[[str, Any], Any]) -> Any:
    if not isinstance(body, dict):
        raise PatchError("body must be a JSON object")
    return replace(controls, **{k: check(k, v) for k, v in body.items()})


def apply_chute_patch(controls: ChuteControls, body: Any) -> ChuteControls:
    return _patched(controls, body, _check)


@dataclass(frozen=True)
class AccountControls:
    """The simulated account (one for every key): errors for every chute, quota, rate-limit headers.

    Quota as in Chutes' invocation path: ``quota_total`` requests a day are covered by the
    subscription (0 = pay as you go); past it, a request is refused with 402 when ``balance`` is
    not positive. Every answer carries ``X-Chutes-Quota-Total/Used/Remaining`` (0/0/0 on a pay as
    you go account, as captured), ``X-Chutes-RL-User`` (``rl_user``, an integer or ``"inf"``) and,
    when set, ``X-Chutes-RL-Chute``. ``quota_used`` is the starting count (the simulator counts on).
    """

    error_rate: float = 0.0
    error_status: int = 429
    error_kind: str | None = None
    quota_total: int = 0
    quota_used: int = 0
    balance: float = 100.0
    rl_user: int | str = 60
    rl_chute: int | None = None


def _check_account(name: str, value: Any) -> Any:
    if name in ("error_rate", "error_status", "error_kind"):
        return _check(name, value)
    if name == "rl_chute":
        _optional_count(name, value)
    elif name in ("quota_total", "quota_used"):
        if not _is_int(value) or value < 0:
            raise PatchError(f"{name} must be an integer >= 0")
    elif name == "balance":
        if not _is_num(value):
            raise PatchError("balance must be a number")
        value = float(value)
    elif name == "rl_user":
        if value != "inf" and (not _is_int(value) or value < 0):
            raise PatchError("rl_user must be an integer >= 0 or \"inf\"")
    else:
        raise PatchError(f"unknown field {name!r}")
    return value


def apply_account_patch(controls: AccountControls, body: Any) -> AccountControls:
    return _patched(controls, body, _check_account)


def error_for(kind: str | None, status: int, chute_id: str) -> tuple[int, str]:
    """(status, detail) of an injected error: the kind's, else Chutes' text for ``status``."""
    kind = kind or _KIND_OF_STATUS.get(status)
    if kind is None:
        return status, f"simulated error {status}"
    code, text = ERROR_KINDS[kind]
    return code, text.replace("{chute_id}", chute_id)


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
