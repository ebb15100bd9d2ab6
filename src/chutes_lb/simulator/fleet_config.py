"""The simulated fleet: a small YAML file (``SIM_FLEET_PATH``), the proxy's model list, or both.

Fleet file::

    alpha: 1.0                 # optional: slowdown at full load (see model.py)
    from_proxy_config: true    # optional: serve the chutes of LITELLM_CONFIG_PATH (see below)
    defaults:                  # optional: applied to every chute
      instances: 2
      concurrency: 8             # requests one instance serves at once
      ttft: {median: 0.5, sigma: 0.4}           # seconds, before prefill
      tps: {median: 40, sigma: 0.2}             # tokens/s per request, idle instance
      output_tokens: {median: 150, sigma: 0.6, max: 1024}
      prefill_rate: 10000        # uncached prompt tokens/s one instance computes
      cache_tokens: 500000       # prefix cache per instance, tokens
      cache_block_tokens: 64     # prefix-cache block (hash granularity), tokens
      context_length: 131072     # prompt + max_tokens beyond it: vLLM's 400
      reject_share: 0.0          # share of requests answered 429 at any load
      supported_features: [json_mode, tools, structured_outputs, reasoning]   # without tools: vLLM's 400 for tools
      pricing: {prompt: 0.25, completion: 1.0}  # USD per million tokens (cache reads at half the prompt price)
      quantization: fp8
      confidential_compute: false   # default: true for a name ending in -TEE
    chutes:
      - chute_id: 2ff25e81-4586-5ec8-b892-3a6f342693d7
        name: moonshotai/Kimi-K2.5-TEE
        instances: 3          # any default may be overridden per chute

Which chutes are served:

* without ``from_proxy_config`` the ``chutes`` list is the fleet, exactly (test fleets: chutes
  that are in no config); each entry needs ``chute_id`` and ``name``;
* with ``from_proxy_config: true`` the fleet is the chutes of ``LITELLM_CONFIG_PATH``
  (``chutes_lb.fleet.load_chutes``), each with its ``model_info.concurrency``; an entry of
  ``chutes`` is an override for the configured chute with that ``chute_id`` or ``name``
  (precedence: the override, then the config's concurrency, then ``defaults``, then the built-in
  defaults). An override that matches no configured chute is ignored, with a warning: the demo
  serves exactly the configured chutes, and a chute added to the config is served with defaults;
* no file at all (``SIM_FLEET_PATH`` empty) is ``from_proxy_config`` with no overrides.

Defaults and where they come from: simulator/README.md.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from chutes_lb.fleet import FleetError, load_chutes
from chutes_lb.simulator.model import Dist

__all__ = ["ChuteSpec", "FleetConfig", "fleet_from_mapping", "load_fleet", "fleet_from_proxy_config"]

DEFAULT_INSTANCES = 2
DEFAULT_TTFT = Dist(0.5, 0.4, 0.01, 30.0)
DEFAULT_TPS = Dist(40.0, 0.2, 1.0, 1000.0)
DEFAULT_OUTPUT = Dist(150.0, 0.6, 1.0, 1024.0)
DEFAULT_PREFILL_RATE = 10000.0  # tokens/s: order of 8xH200 DeepSeek-V3.2 figures, see README
DEFAULT_CACHE_TOKENS = 500_000  # per instance: past the knee of the study's hit-ratio sweep
DEFAULT_BLOCK_TOKENS = 64  # DeepSeek-V3.2's cached-token counts on Chutes are multiples of 64
DEFAULT_CONTEXT = 131072
FEATURES = ("json_mode", "tools", "structured_outputs", "reasoning")  # the values /v1/models shows on Chutes
DEFAULT_FEATURES = FEATURES
DEFAULT_PRICING = (0.25, 1.0)  # USD per million prompt / completion tokens


@dataclass(frozen=True)
class ChuteSpec:
    chute_id: str
    name: str
    instances: int = DEFAULT_INSTANCES
    concurrency: int = 8
    ttft: Dist = DEFAULT_TTFT
    tps: Dist = DEFAULT_TPS
    output_tokens: Dist = DEFAULT_OUTPUT
    prefill_rate: float = DEFAULT_PREFILL_RATE
    cache_tokens: int = DEFAULT_CACHE_TOKENS
    block_tokens: int = DEFAULT_BLOCK_TOKENS
    context_length: int = DEFAULT_CONTEXT
    reject_share: float = 0.0
    supported_features: tuple[str, ...] = DEFAULT_FEATURES
    pricing: tuple[float, float] = DEFAULT_PRICING
    quantization: str = "fp8"
    confidential_compute: bool | None = None  # None: true for a name ending in -TEE

    @property
    def tools(self) -> bool:
        return "tools" in self.supported_features

    @property
    def tee(self) -> bool:
        return self.name.endswith("-TEE") if self.confidential_compute is None else self.confidential_compute


@dataclass(frozen=True)
class FleetConfig:
    chutes: tuple[ChuteSpec, ...]
    alpha: float = 1.0
    source: str = "fleet"
    warnings: tuple[str, ...] = ()


def _dist(raw: Any, where: str, default: Dist) -> Dist:
    if raw is None:
        return default
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = {"median": raw, "sigma": 0.0}
    if not isinstance(raw, dict):
        raise FleetError(f"{where}: must be a number or a mapping with median/sigma")
    try:
        median = float(raw.get("median", default.median))
        sigma = float(raw.get("sigma", default.sigma))
        lo = float(raw.get("min", default.min))
        hi = float(raw.get("max", default.max))
    except (TypeError, ValueError):
        raise FleetError(f"{where}: median/sigma/min/max must be numbers") from None
    if not (math.isfinite(median) and median > 0) or not (math.isfinite(sigma) and sigma >= 0) or lo < 0 or hi < lo:
        raise FleetError(f"{where}: need median > 0, sigma >= 0, 0 <= min <= max")
    return Dist(median, sigma, lo, hi)


def _int(raw: Any, where: str, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise FleetError(f"{where}: must be an integer >= {minimum}")
    return raw


def _num(raw: Any, where: str, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) and raw <= hi
    if not ok or raw < lo or (lo_open and raw == lo):
        raise FleetError(f"{where}: must be a number {'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi < math.inf else ""))
    return float(raw)


def _features(raw: Any, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return default
    if not isinstance(raw, list) or any(f not in FEATURES for f in raw):
        raise FleetError(f"{where}: must be a list of " + ", ".join(FEATURES))
    return tuple(dict.fromkeys(raw))


def _pricing(raw: Any, where: str, default: tuple[float, float]) -> tuple[float, float]:
    if raw is None:
        return default
    if not isinstance(raw, dict) or set(raw) - {"prompt", "completion"}:
        raise FleetError(f"{where}: must be a mapping with prompt and completion (USD per million tokens)")
    return (_num(raw.get("prompt", default[0]), f"{where}.prompt", 0), _num(raw.get("completion", default[1]), f"{where}.completion", 0))


def _chute(raw: Any, where: str, base: ChuteSpec) -> ChuteSpec:
    if not isinstance(raw, dict):
        raise FleetError(f"{where}: must be a mapping")
    chute_id = str(raw.get("chute_id") or "").strip()
    try:
        uuid.UUID(chute_id)
    except ValueError:
        raise FleetError(f"{where}: chute_id must be a UUID, got {chute_id!r}") from None
    name = str(raw.get("name") or "").strip()
    if not name:
        raise FleetError(f"{where}: name is required")
    return replace(
        base,
        chute_id=chute_id,
        name=name,
        instances=_int(raw.get("instances", base.instances), f"{where}.instances", 0),
        concurrency=_int(raw.get("concurrency", base.concurrency), f"{where}.concurrency", 1),
        ttft=_dist(raw.get("ttft"), f"{where}.ttft", base.ttft),
        tps=_dist(raw.get("tps"), f"{where}.tps", base.tps),
        output_tokens=_dist(raw.get("output_tokens"), f"{where}.output_tokens", base.output_tokens),
        prefill_rate=_num(raw.get("prefill_rate", base.prefill_rate), f"{where}.prefill_rate", 0, lo_open=True),
        cache_tokens=_int(raw.get("cache_tokens", base.cache_tokens), f"{where}.cache_tokens", 0),
        block_tokens=_int(raw.get("cache_block_tokens", base.block_tokens), f"{where}.cache_block_tokens", 1),
        context_length=_int(raw.get("context_length", base.context_length), f"{where}.context_length", 1),
        reject_share=_num(raw.get("reject_share", base.reject_share), f"{where}.reject_share", 0, 1),
        supported_features=_features(raw.get("supported_features"), f"{where}.supported_features", base.supported_features),
        pricing=_pricing(raw.get("pricing"), f"{where}.pricing", base.pricing),
        quantization=str(raw.get("quantization", base.quantization)),
        confidential_compute=_tee(raw.get("confidential_compute", base.confidential_compute), f"{where}.confidential_compute"),
    )


def _tee(raw: Any, where: str) -> bool | None:
    if raw is not None and not isinstance(raw, bool):
        raise FleetError(f"{where}: must be true or false")
    return raw


def _overridden(data: dict[str, Any], base: ChuteSpec, source: str, config_path: str | Path | None) -> tuple[tuple[ChuteSpec, ...], tuple[str, ...]]:
    """The configured chutes with the fleet's entries as overrides (see the module docstring)."""
    if config_path is None:
        raise FleetError(f"{source}: from_proxy_config needs LITELLM_CONFIG_PATH")
    overrides = data.get("chutes") or []
    if not isinstance(overrides, list):
        raise FleetError(f"{source}: chutes must be a list")
    by_key: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, o in enumerate(overrides):
        if not isinstance(o, dict) or not (o.get("chute_id") or o.get("name")):
            raise FleetError(f"{source}: chutes[{i}]: an override needs a chute_id or a name")
        for key in (o.get("chute_id"), o.get("name")):
            if key:
                by_key[str(key).strip()] = (i, o)
    used: set[int] = set()
    chutes = []
    for ref in load_chutes(config_path):
        i, o = by_key.get(ref.chute_id) or by_key.get(ref.name) or (-1, {})
        if i >= 0:
            used.add(i)
        where = f"{source}: chutes[{i}]" if i >= 0 else f"{config_path}: {ref.name}"
        chutes.append(_chute({**o, "chute_id": ref.chute_id, "name": ref.name}, where, replace(base, concurrency=ref.concurrency)))
    warnings = tuple(f"{source}: chutes[{i}] ({o.get('name') or o.get('chute_id')}) matches no chute of {config_path}; ignored"
                     for i, o in enumerate(overrides) if i not in used)
    return tuple(chutes), warnings


def fleet_from_mapping(data: Any, source: str = "fleet", litellm_config_path: str | Path | None = None) -> FleetConfig:
    if not isinstance(data, dict):
        raise FleetError(f"{source}: must be a mapping")
    from_config = data.get("from_proxy_config", False)
    if not isinstance(from_config, bool):
        raise FleetError(f"{source}: from_proxy_config must be true or false")
    if not from_config and (not isinstance(data.get("chutes"), list) or not data["chutes"]):
        raise FleetError(f"{source}: needs a non-empty 'chutes' list (or from_proxy_config: true)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise FleetError(f"{source}: defaults must be a mapping")
    base = _chute({"chute_id": str(uuid.UUID(int=0)), "name": "-", **defaults}, f"{source}: defaults", ChuteSpec("", ""))
    warnings: tuple[str, ...] = ()
    if from_config:
        chutes, warnings = _overridden(data, base, source, litellm_config_path)
    else:
        chutes = tuple(_chute(c, f"{source}: chutes[{i}]", base) for i, c in enumerate(data["chutes"]))
    seen: set[str] = set()
    for c in chutes:
        for key in (c.chute_id, c.name):
            if key in seen:
                raise FleetError(f"{source}: duplicate chute id or name {key!r}")
            seen.add(key)
    try:
        alpha = float(data.get("alpha", 1.0))
    except (TypeError, ValueError):
        alpha = -1.0
    if not (math.isfinite(alpha) and alpha >= 0):
        raise FleetError(f"{source}: alpha must be a number >= 0")
    return FleetConfig(chutes, alpha, source, warnings)


def load_fleet(path: str | Path, litellm_config_path: str | Path | None = None) -> FleetConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FleetError(f"{p}: file not found (SIM_FLEET_PATH)") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from None
    return fleet_from_mapping(data, str(p), litellm_config_path)


def fleet_from_proxy_config(litellm_config_path: str | Path) -> FleetConfig:
    fleet = fleet_from_mapping({"from_proxy_config": True}, f"{litellm_config_path} (model list, default capacities)", litellm_config_path)
    return fleet
