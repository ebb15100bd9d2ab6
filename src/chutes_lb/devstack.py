"""The whole stack as local processes: simulator, utilization-poller, proxy (and Redis).

Used by the integration tests, the benchmarks and ``scripts/run-proxy.sh --demo``. Every
process gets a free loopback port, its own log file, a bounded readiness wait and a bounded
stop. Nothing here is needed in production (Compose runs the same entry points).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from chutes_lb.localstack import ManagedProcess, free_port, python_module, wait_http
from chutes_lb.proxy.environment import LITELLM_OFFLINE

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "proxy" / "litellm-config.yaml"


def _base_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LITELLM_OFFLINE)  # for tools that import LiteLLM before the proxy sets it (benchmarks)
    env.update(extra or {})
    return env


class PollerProcess:
    """``python -m chutes_lb.poller`` on a free port."""

    def __init__(self, api_base: str, redis_url: str, prefix: str = "chutes-lb", config: str | os.PathLike[str] = DEFAULT_CONFIG,
                 interval: float = 1.0, env: Mapping[str, str] | None = None, port: int | None = None, log_dir: str | None = None) -> None:
        self.port = port or free_port()
        log_dir = log_dir or tempfile.mkdtemp(prefix="chutes-poller-")
        self.process = ManagedProcess(f"poller-{self.port}", python_module("chutes_lb.poller"), env=_base_env({
            "CHUTES_API_BASE": api_base, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
            "LITELLM_CONFIG_PATH": str(config), "POLL_INTERVAL_SECONDS": repr(interval), "POLL_TIMEOUT_SECONDS": "2",
            "POLLER_PORT": str(self.port), "POLLER_HOST": "127.0.0.1", "DEMO_MODE": "true", **(env or {}),
        }), log_path=os.path.join(log_dir, "poller.log"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "PollerProcess":
        self.process.start()
        wait_http(self.base_url + "/metrics", timeout, proc=self.process)
        return self

    def stop(self) -> int | None:
        return self.process.stop(10)


class ProxyProcess:
    """``python -m chutes_lb.proxy`` (LiteLLM + our hook) with N workers on a free port."""

    def __init__(self, inference_base: str, redis_url: str, master_key: str, prefix: str = "chutes-lb",
                 config: str | os.PathLike[str] = DEFAULT_CONFIG, workers: int = 2, strategy: str = "headroom",
                 env: Mapping[str, str] | None = None, port: int | None = None, log_dir: str | None = None) -> None:
        self.port = port or free_port()
        self.master_key = master_key
        log_dir = log_dir or tempfile.mkdtemp(prefix="chutes-proxy-")
        self.process = ManagedProcess(f"proxy-{self.port}", python_module("chutes_lb.proxy"), env=_base_env({
            "CHUTES_INFERENCE_BASE": inference_base, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix,
            "LITELLM_CONFIG_PATH": str(config), "LITELLM_MASTER_KEY": master_key, "LITELLM_PORT": str(self.port),
            "LITELLM_HOST": "127.0.0.1", "LITELLM_WORKERS": str(workers), "ROUTING_STRATEGY": strategy,
            "DEMO_MODE": "true", "PROMETHEUS_MULTIPROC_DIR": os.path.join(log_dir, "metrics"),
            "PROXY_DRAIN_SECONDS": "0",  # no load balancer in front of these: stop at once (tests of the drain set it)
            **(env or {}),
        }), log_path=os.path.join(log_dir, "proxy.log"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ProxyProcess":
        self.process.start()
        wait_http(self.base_url + "/readyz", timeout, proc=self.process)
        return self

    def stop(self) -> int | None:
        return self.process.stop(25)

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.base_url + "/metrics", timeout=10) as resp:
            return resp.read().decode()


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != name:
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            total += sample.value
    return total


def write_config(path: str | os.PathLike[str], chutes: list[Mapping[str, Any]], base: str | os.PathLike[str] = DEFAULT_CONFIG) -> Path:
    """A LiteLLM config like ``base`` but with these chutes (chute_id, name, concurrency)."""
    import yaml

    config = yaml.safe_load(Path(base).read_text())
    template = config["model_list"][0]
    model_list = []
    for chute in chutes:
        entry = {
            "model_name": template["model_name"],
            "litellm_params": {**template["litellm_params"], "model": f"openai/{chute['name']}"},
            "model_info": {"id": chute["chute_id"], "concurrency": int(chute.get("concurrency", 8))},
        }
        model_list.append(entry)
    config["model_list"] = model_list
    out = Path(path)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out
