"""``GET /chutes/{id_or_name}`` records, shaped like the real API's (pure).

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

__all__ = ["chute_record"]

_REGIONS = ("us-east", "us-west", "eu-central", "ap-southeast")
_CREATED = "2025-12-01T00:00:00"


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
