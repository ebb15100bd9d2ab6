"""The simulated fleet: read from a small YAML file, or from the proxy's model list.

Fleet file (``SIM_FLEET_PATH``)::

    alpha: 1.0                 # optional: slowdown at full load (see model.py)
    defaults:                  # optional: applied to every chute
      instances: 2
      concurrency: 8
      ttft: {median: 0.5, sigma: 0.4}           # seconds
      tps: {median: 40, sigma: 0.2}             # tokens/s per request, idle chute
      output_tokens: {median: 150, sigma: 0.6, max: 1024}
    chutes:
      - chute_id: 2ff25e81-4586-5ec8-b892-3a6f342693d7
        name: moonshotai/Kimi-K2.5-TEE
        instances: 3          # any default may be overridden per chute

Without a file, every chute of ``LITELLM_CONFIG_PATH`` (``chutes_lb.fleet.load_chutes``) is
simulated with ``DEFAULT_INSTANCES`` instances, its ``model_info.concurrency`` and the defaults.
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


@dataclass(frozen=True)
class ChuteSpec:
    chute_id: str
    name: str
    instances: int = DEFAULT_INSTANCES
    concurrency: int = 8
    ttft: Dist = DEFAULT_TTFT
    tps: Dist = DEFAULT_TPS
    output_tokens: Dist = DEFAULT_OUTPUT


@dataclass(frozen=True)
class FleetConfig:
    chutes: tuple[ChuteSpec, ...]
    alpha: float = 1.0
    source: str = "fleet"


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
    )


def fleet_from_mapping(data: Any, source: str = "fleet") -> FleetConfig:
    if not isinstance(data, dict) or not isinstance(data.get("chutes"), list) or not data["chutes"]:
        raise FleetError(f"{source}: needs a non-empty 'chutes' list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise FleetError(f"{source}: defaults must be a mapping")
    base = _chute({"chute_id": str(uuid.UUID(int=0)), "name": "-", **defaults}, f"{source}: defaults", ChuteSpec("", ""))
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
    return FleetConfig(chutes, alpha, source)


def load_fleet(path: str | Path) -> FleetConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FleetError(f"{p}: file not found (SIM_FLEET_PATH)") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from None
    return fleet_from_mapping(data, str(p))


def fleet_from_proxy_config(litellm_config_path: str | Path) -> FleetConfig:
    chutes = tuple(
        ChuteSpec(c.chute_id, c.name, DEFAULT_INSTANCES, c.concurrency) for c in load_chutes(litellm_config_path)
    )
    return FleetConfig(chutes, 1.0, f"{litellm_config_path} (model list, default capacities)")
