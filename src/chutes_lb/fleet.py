"""The one list of chutes: read from the LiteLLM config's ``model_list`` (and the few router
settings the proxy itself acts on).

Each ``model_list`` entry is a *deployment*: one chute in one model group. ``model_info.id`` is
LiteLLM's deployment id; the chute's identity is ``model_info.chute_id`` when given, else the
same ``model_info.id`` (the chute UUID). One chute may be listed in several model groups (a
catch-all group and a model-specific one): it is still one chute, with one snapshot entry, one
set of live counts, 429 holds, metrics and log lines. The chute name is the part of
``litellm_params.model`` after the provider prefix (``openai/<name>`` or ``chutes/<name>``), or
``model_info.chute_name``. The proxy, the poller and the simulator all read this file.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ChuteRef", "Fleet", "FleetError", "read_fleet", "load_chutes", "load_deployments", "chutes_from_config",
           "ROUTING_CALLBACK"]

ROUTING_CALLBACK = "chutes_routing.proxy_handler_instance"


class FleetError(ValueError):
    """The model list is missing, empty or malformed; the message says where."""


@dataclass(frozen=True)
class ChuteRef:
    chute_id: str  # the chute UUID (model_info.chute_id, else model_info.id)
    name: str  # chute name, e.g. deepseek-ai/DeepSeek-V3-0324
    model_group: str  # LiteLLM model_name, e.g. chutes-models
    concurrency: int = 8  # requests one instance serves at once (model_info.concurrency)
    deployment_id: str = ""  # LiteLLM's model_info.id (often the chute UUID itself)
    max_model_len: int | None = None  # model_info.max_model_len: the context window in tokens (None: unknown)
    features: tuple[str, ...] | None = None  # model_info.supported_features (None: unknown)

    def __post_init__(self) -> None:
        if not self.deployment_id:
            object.__setattr__(self, "deployment_id", self.chute_id)


@dataclass(frozen=True)
class Fleet:
    deployments: tuple[ChuteRef, ...]
    chutes: tuple[ChuteRef, ...]  # one per chute (its first deployment)
    groups: dict[str, tuple[str, ...]]  # model group -> chute ids, in config order
    aliases: dict[str, str] = field(default_factory=dict)  # router_settings.model_group_alias
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # router_settings.fallbacks
    num_retries: int = 3  # router_settings.num_retries: retries after a failed attempt
    cooldown_seconds: float = 10.0  # router_settings.cooldown_time
    callbacks: tuple[str, ...] = ()  # litellm_settings.callbacks
    warnings: tuple[str, ...] = ()


def _positive_int(value: Any, where: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FleetError(f"{where}: {name} must be a positive integer, got {value!r}")
    return value


def chutes_from_config(config: object, source: str = "config") -> Fleet:
    if not isinstance(config, dict) or not isinstance(config.get("model_list"), list):
        raise FleetError(f"{source}: no model_list")
    deployments: list[ChuteRef] = []
    chutes: dict[str, ChuteRef] = {}
    groups: dict[str, list[str]] = {}
    warnings: list[str] = []
    for i, entry in enumerate(config["model_list"]):
        where = f"{source}: model_list[{i}]"
        if not isinstance(entry, dict):
            raise FleetError(f"{where} is not a mapping")
        params = entry.get("litellm_params") or {}
        info = entry.get("model_info") or {}
        dep_id = str(info.get("id") or "").strip()
        if not dep_id:
            raise FleetError(f"{where}: model_info.id (the chute UUID) is required")
        chute_id = str(info.get("chute_id") or dep_id).strip()
        model = str(params.get("model") or "")
        name = str(info.get("chute_name") or (model.split("/", 1)[-1] if "/" in model else model)).strip()
        if not name:
            raise FleetError(f"{where}: litellm_params.model is required")
        concurrency = _positive_int(info.get("concurrency", 8), where, "model_info.concurrency")
        window = info.get("max_model_len")
        if window is not None:
            window = _positive_int(window, where, "model_info.max_model_len")
        features = info.get("supported_features")
        if features is not None:
            if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
                raise FleetError(f"{where}: model_info.supported_features must be a list of names (tools, json_mode, reasoning, ...)")
            features = tuple(features)
        group = str(entry.get("model_name") or "").strip()
        if chute_id in groups.get(group, ()):
            raise FleetError(f"{where}: duplicate chute {chute_id} in model group {group!r} (a chute may be in several groups, once each)")
        ref = ChuteRef(chute_id, name, group, concurrency, dep_id, window, features)
        first = chutes.get(chute_id)
        if first is None:
            chutes[chute_id] = ref
            try:
                uuid.UUID(chute_id)
            except ValueError:
                warnings.append(f"{where}: chute id {chute_id!r} is not a UUID; Chutes identifies chutes by UUID "
                                "(the utilization API will not match it)")
        elif (first.name, first.concurrency, first.max_model_len, first.features) != (name, concurrency, window, features):
            raise FleetError(f"{where}: chute {chute_id} is listed as {name!r} with concurrency {concurrency}, but "
                             f"earlier as {first.name!r} with concurrency {first.concurrency} (or another max_model_len / "
                             "supported_features); a chute is one chute")
        deployments.append(ref)
        groups.setdefault(group, []).append(chute_id)
    if not deployments:
        raise FleetError(f"{source}: model_list is empty")
    router = config.get("router_settings") or {}
    litellm_settings = config.get("litellm_settings") or {}
    if not isinstance(router, dict) or not isinstance(litellm_settings, dict):
        raise FleetError(f"{source}: router_settings and litellm_settings must be mappings")
    aliases = router.get("model_group_alias") or {}
    if not isinstance(aliases, dict):
        raise FleetError(f"{source}: router_settings.model_group_alias must map client model names to model groups")
    alias_map = {str(k): str(v if not isinstance(v, dict) else v.get("model", "")) for k, v in aliases.items()}
    for alias, target in alias_map.items():
        if target not in groups:
            raise FleetError(f"{source}: router_settings.model_group_alias: {alias!r} maps to {target!r}, which is not a model group")
    fallbacks: dict[str, tuple[str, ...]] = {}
    for item in router.get("fallbacks") or []:
        if not isinstance(item, dict):
            raise FleetError(f"{source}: router_settings.fallbacks entries must be mappings group -> [groups]")
        for group, targets in item.items():
            targets = [targets] if isinstance(targets, str) else list(targets or [])
            for t in targets:
                if t not in groups:
                    raise FleetError(f"{source}: router_settings.fallbacks: {group!r} falls back to {t!r}, which is not a model group")
            fallbacks[str(group)] = tuple(str(t) for t in targets)
    num_retries = router.get("num_retries", 3)
    if isinstance(num_retries, bool) or not isinstance(num_retries, int) or not 0 <= num_retries <= 10:
        raise FleetError(f"{source}: router_settings.num_retries must be an integer 0..10, got {num_retries!r}")
    callbacks = litellm_settings.get("callbacks") or []
    return Fleet(tuple(deployments), tuple(chutes.values()), {g: tuple(ids) for g, ids in groups.items()}, alias_map,
                 fallbacks, num_retries, float(router.get("cooldown_time", 10) or 10),
                 tuple(str(c) for c in callbacks) if isinstance(callbacks, list) else (), tuple(warnings))


def read_fleet(path: str | Path) -> Fleet:
    p = Path(path)
    try:
        config = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FleetError(f"{p}: file not found (LITELLM_CONFIG_PATH)") from None
    except (OSError, yaml.YAMLError) as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from None
    return chutes_from_config(config, str(p))


def load_chutes(path: str | Path) -> list[ChuteRef]:
    """Every configured chute once (its first deployment): for the poller and the simulator."""
    return list(read_fleet(path).chutes)


def load_deployments(path: str | Path) -> list[ChuteRef]:
    """Every deployment (one chute in one model group): for the proxy's routing."""
    return list(read_fleet(path).deployments)
