"""A real stack for proxy tests: simulator + poller + LiteLLM proxy (2 workers) + Redis."""
from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chutes_lb.devstack import PollerProcess, ProxyProcess, write_config
from chutes_lb.simulator.launch import SimulatorProcess

MASTER_KEY = "sk-test-canary-9f2c41d7"

# Three chutes, capacities 16 : 8 : 4 slots (instances x concurrency 4).
FLEET = [
    {"chute_id": "aaaaaaaa-0000-5000-8000-000000000001", "name": "test/big", "instances": 4, "concurrency": 4},
    {"chute_id": "bbbbbbbb-0000-5000-8000-000000000002", "name": "test/medium", "instances": 2, "concurrency": 4},
    {"chute_id": "cccccccc-0000-5000-8000-000000000003", "name": "test/small", "instances": 1, "concurrency": 4},
]
NAMES = {c["chute_id"]: c["name"] for c in FLEET}
SIM_DEFAULTS = {"ttft": {"median": 0.3, "sigma": 0.1}, "tps": {"median": 100, "sigma": 0.1},
                "output_tokens": {"median": 60, "sigma": 0.2, "max": 200}}


@dataclass
class Stack:
    sim: SimulatorProcess
    poller: PollerProcess
    proxy: ProxyProcess
    redis_url: str
    prefix: str
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proxy.base_url

    def stop(self) -> None:
        for proc in (self.proxy, self.poller, self.sim):
            try:
                proc.stop()
            except Exception:
                pass


def start_stack(redis_url: str, prefix: str, *, refresh_seconds: float = 1.0, time_scale: float = 1.0,
                proxy_env: dict[str, str] | None = None, upstream_timeout: float = 4.0, strategy: str = "headroom",
                windows: dict[str, int] | None = None) -> Stack:
    """``windows``: chute id -> context window, for both the simulator (it answers vLLM's 400
    beyond it) and the proxy's config (``model_info.max_model_len``)."""
    tmp = Path(tempfile.mkdtemp(prefix="chutes-stack-"))
    config = write_config(tmp / "litellm-config.yaml", FLEET)
    text = config.read_text().replace("timeout: 120", f"timeout: {upstream_timeout}")
    import yaml

    data = yaml.safe_load(text)
    for entry in data["model_list"]:
        if windows and entry["model_info"]["id"] in windows:
            entry["model_info"]["max_model_len"] = windows[entry["model_info"]["id"]]
        entry["litellm_params"]["timeout"] = upstream_timeout
        entry["litellm_params"]["stream_timeout"] = upstream_timeout
    data["router_settings"]["timeout"] = upstream_timeout * 4
    data["litellm_settings"]["request_timeout"] = upstream_timeout * 4
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    # no chutes_routing.py beside this config: the callback module is found wherever the config is
    fleet = [{**c, "context_length": windows[c["chute_id"]]} if windows and c["chute_id"] in windows else c for c in FLEET]
    sim = SimulatorProcess({"defaults": SIM_DEFAULTS, "chutes": fleet}, time_scale=time_scale, refresh_seconds=refresh_seconds).start()
    poller = proxy = None
    try:
        poller = PollerProcess(sim.base_url, redis_url, prefix, config=config, interval=0.5).start()
        proxy = ProxyProcess(sim.openai_base, redis_url, MASTER_KEY, prefix, config=config, workers=2, strategy=strategy,
                             env={"SNAPSHOT_REFRESH_SECONDS": "1", "INFLIGHT_PUBLISH_SECONDS": "0.5", **(proxy_env or {})},
                             log_dir=str(tmp)).start()
    except BaseException:
        for p in (proxy, poller, sim):
            if p is not None:
                p.stop()
        raise
    return Stack(sim, poller, proxy, redis_url, prefix, tmp)


CHAT = {"model": "chutes-models", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40}


async def _burst(url: str, n: int, body: dict[str, Any], timeout: float, distinct: bool) -> list[tuple[int, str | None]]:
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=n + 5)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits) as client:
        async def one() -> tuple[int, str | None]:
            sent = body
            if distinct:  # a conversation of its own: no session affinity between the requests
                sent = {**body, "messages": [{"role": "user", "content": f"hello {uuid.uuid4().hex}"}]}
            try:
                r = await client.post("/v1/chat/completions", json=sent)
                return r.status_code, r.headers.get("x-litellm-model-id")
            except httpx.HTTPError as exc:
                return -1, type(exc).__name__

        return await asyncio.gather(*(one() for _ in range(n)))


def burst(url: str, n: int, body: dict[str, Any] | None = None, timeout: float = 60.0,
          distinct: bool = True) -> list[tuple[int, str | None]]:
    """``n`` concurrent chat requests; (status, serving chute id) each; -1 = transport error.
    ``distinct`` (default): each request opens its own conversation, as independent clients do;
    requests with one shared prompt share a session key, and affinity would place them, not the
    pick these tests are about."""
    return asyncio.run(_burst(url, n, body or CHAT, timeout, distinct))


def shares(results: list[tuple[int, str | None]]) -> Counter[str]:
    return Counter(NAMES.get(chute or "", chute or "?") for status, chute in results if status == 200)
