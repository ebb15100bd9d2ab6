"""``GET /chutes/{id_or_name}`` records and ``GET /v1/models`` entries, shaped like the real API's (pure).

``/v1/models`` (no auth on Chutes; shape of a 2026-02-18 capture in chutesai/chutes-autopilot's
test data): per chute ``id`` (the name), ``root`` (the name without ``-TEE``), ``chute_id``,
``max_model_len`` / ``context_length`` (the chute's current window), ``max_output_length``,
``pricing`` and ``price`` (USD per million tokens; ``input_cache_read`` at half the input
price; TAO at a fixed rate), ``quantization``, ``supported_features``, ``confidential_compute``,
modalities and sampling parameters.

The real answer (chutes-api, see shared/reference/chutes-api.md) carries ``chute_id``,
``name``, ``concurrency`` (the authoritative per-instance concurrency), ``max_instances``,
``scaling_threshold``, ``boost`` and ``instances[]`` with ``instance_id``, ``region``,
``active`` and ``verified``; the simulator fills those from the chute's current controls, so
an admin change of ``concurrency`` or ``instances`` shows here at once (the utilization board
only shows it at its next refresh). Instance ids are stable per chute and index.
"""
from __future__ import annotations

import datetime
import re
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chutes_lb.simulator.service import ChuteRuntime

__all__ = ["chute_record", "model_entry"]

_REGIONS = ("us-east", "us-west", "eu-central", "ap-southeast")
_CREATED = "2025-12-01T00:00:00"
_TAO_PER_USD = 0.0052265  # the capture's ratio; only the shape matters
_SAMPLING = ["temperature", "top_p", "top_k", "repetition_penalty", "frequency_penalty", "presence_penalty", "stop", "seed"]


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def chute_record(chute: "ChuteRuntime", wall: float) -> dict[str, Any]:
    spec, c = chute.spec, chute.controls
    ns = uuid.UUID(spec.chute_id)
    instances = [{"instance_id": str(uuid.uuid5(ns, f"instance-{i}")), "region": _REGIONS[i % len(_REGIONS)],
                  "active": True, "verified": True, "last_verified_at": _iso(wall)} for i in range(c.instances)]
    return {
        "chute_id": spec.chute_id, "name": spec.name,
        "slug": "chutes-" + re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-"),
        "tagline": "simulated chute", "public": True, "standard_template": "vllm",
        "concurrency": c.concurrency, "max_instances": max(c.instances, spec.instances), "scaling_threshold": 0.75,
        "boost": None, "hot": c.instances > 0, "instances": instances,
        "created_at": _CREATED, "updated_at": _iso(wall),
    }


def model_entry(chute: "ChuteRuntime") -> dict[str, Any]:
    spec, window = chute.spec, chute.controls.context_length
    prompt, completion = spec.pricing
    usd = {"input": prompt, "output": completion, "input_cache_read": round(prompt / 2, 6)}
    return {
        "id": spec.name, "root": spec.name.removesuffix("-TEE"), "object": "model", "parent": None, "created": 1735689600,
        "owned_by": "vllm", "chute_id": spec.chute_id,
        "price": {k: {"tao": v * _TAO_PER_USD, "usd": v} for k, v in usd.items()},
        "pricing": {"prompt": prompt, "completion": completion, "input_cache_read": usd["input_cache_read"]},
        "quantization": spec.quantization, "max_model_len": window, "context_length": window,
        "max_output_length": min(window, 65536), "input_modalities": ["text"], "output_modalities": ["text"],
        "supported_features": list(spec.supported_features), "confidential_compute": spec.tee,
        "supported_sampling_parameters": _SAMPLING,
    }
