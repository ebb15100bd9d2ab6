"""The one list of chutes: read from the LiteLLM config's ``model_list``.

Each deployment's ``model_info.id`` is the chute UUID; the chute name is the part of
``litellm_params.model`` after the provider prefix (``openai/<name>`` or ``chutes/<name>``),
or ``model_info.chute_name`` when given. The proxy, the poller and the simulator all read
this same list, so which chutes matter is defined in exactly one file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["ChuteRef", "FleetError", "load_chutes", "chutes_from_config"]


class FleetError(ValueError):
    """The model list is missing, empty or malformed; the message says where."""


@dataclass(frozen=True)
class ChuteRef:
    chute_id: str  # UUID, = model_info.id
    name: str  # chute name, e.g. deepseek-ai/DeepSeek-V3-0324
    model_group: str  # LiteLLM model_name, e.g. chutes-models
    concurrency: int = 8  # requests one instance serves at once (model_info.concurrency)


def chutes_from_config(config: object, source: str = "config") -> list[ChuteRef]:
    if not isinstance(config, dict) or not isinstance(config.get("model_list"), list):
        raise FleetError(f"{source}: no model_list")
    chutes: list[ChuteRef] = []
    seen: set[str] = set()
    for i, entry in enumerate(config["model_list"]):
        where = f"{source}: model_list[{i}]"
        if not isinstance(entry, dict):
            raise FleetError(f"{where} is not a mapping")
        params = entry.get("litellm_params") or {}
        info = entry.get("model_info") or {}
        chute_id = str(info.get("id") or "").strip()
        if not chute_id:
            raise FleetError(f"{where}: model_info.id (the chute UUID) is required")
        if chute_id in seen:
            raise FleetError(f"{where}: duplicate model_info.id {chute_id}")
        seen.add(chute_id)
        model = str(params.get("model") or "")
        name = str(info.get("chute_name") or (model.split("/", 1)[-1] if "/" in model else model)).strip()
        if not name:
            raise FleetError(f"{where}: litellm_params.model is required")
        try:
            concurrency = int(info.get("concurrency", 8))
            if concurrency <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise FleetError(f"{where}: model_info.concurrency must be a positive integer") from None
        chutes.append(ChuteRef(chute_id, name, str(entry.get("model_name") or ""), concurrency))
    if not chutes:
        raise FleetError(f"{source}: model_list is empty")
    return chutes


def load_chutes(path: str | Path) -> list[ChuteRef]:
    p = Path(path)
    try:
        config = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FleetError(f"{p}: file not found (LITELLM_CONFIG_PATH)") from None
    except yaml.YAMLError as exc:
        raise FleetError(f"{p}: not valid YAML: {exc}") from None
    return chutes_from_config(config, str(p))
