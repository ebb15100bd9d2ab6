"""Settings, read once: the process environment, then ``.env``, then defaults.

Every variable the project reads is declared once, in ``_VARS`` below, with its parser and
default; ``.env.example`` documents the same list (a unit test keeps the two in step).
A malformed value stops start-up with a ``SettingsError`` naming the variable. Secrets are
wrapped in :class:`Secret`, whose ``repr``/``str`` never show the value.

Tests build settings from a plain dict: ``Settings.from_mapping({...})``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from chutes_lb.routing.decision import REGISTRY

__all__ = ["Secret", "Settings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """A missing or malformed setting; the message names the variable."""


class Secret:
    """A string that never shows itself in a repr, str or f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)


# ---------------------------------------------------------------- parsers
def _str(raw: str) -> str:
    return raw.strip()


def _secret(raw: str) -> Secret:
    return Secret(raw.strip())


def _pos_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a finite number > 0")
    return value


def _nonneg_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0")
    return value


def _slow_ratio(raw: str) -> float:
    value = _nonneg_float(raw)
    if 0 < value <= 1:
        raise ValueError("must be 0 (off) or > 1")
    return value


def _percent(raw: str) -> float:
    value = _nonneg_float(raw)
    if value > 100:
        raise ValueError("must be a percentage 0..100")
    return value


def _affinity_bound(raw: str) -> float:
    value = _pos_float(raw)
    if value < 1.0:
        raise ValueError("must be >= 1 (1 = no chute above its share of the load)")
    return value


KEY_SOURCES = ("header", "prompt_cache_key", "metadata", "user", "prefix")


def _key_sources(raw: str) -> tuple[str, ...]:
    parts = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    unknown = [p for p in parts if p not in KEY_SOURCES]
    if unknown:
        raise ValueError(f"unknown source {unknown[0]!r}; use a comma list of " + ", ".join(KEY_SOURCES))
    return parts


def _pos_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be an integer > 0")
    return value


def _nonneg_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port 1..65535")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return value

    return parse


def _log_level(raw: str) -> str:
    return _choice("debug", "info", "warning", "error")(raw).upper()


ROUTING_STRATEGIES = tuple(REGISTRY)  # the one registry of strategies (routing/decision.py)
_STRATEGY_DOC = ", ".join(f"{s.name} ({s.summary})" for s in REGISTRY.values())


def _var(env: str, parse: Callable[[str], Any], default: str, doc: str) -> Any:
    return field(metadata={"env": env, "parse": parse, "default": default, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """All settings of every service. Build with :func:`load_settings` or ``from_mapping``."""

    # --- shared
    redis_url: str = _var("REDIS_URL", _str, "redis://localhost:6379/0", "Redis holding the utilization snapshot and the replicas' in-flight counts")
    redis_key_prefix: str = _var("REDIS_KEY_PREFIX", _str, "chutes-lb", "Prefix of every Redis key and channel this project uses")
    litellm_config_path: str = _var("LITELLM_CONFIG_PATH", _str, "proxy/litellm-config.yaml", "LiteLLM config; its model list is the one list of chutes for proxy, poller and simulator")
    log_level: str = _var("LOG_LEVEL", _log_level, "info", "debug, info, warning or error")
    demo_mode: bool = _var("DEMO_MODE", _bool, "false", "true = route to the bundled Chutes simulator (no key needed); false = real Chutes, CHUTES_API_KEY required")
    # --- Chutes
    chutes_api_key: Secret = _var("CHUTES_API_KEY", _secret, "", "Chutes API key (cpk_...); required in real mode, unused in demo mode")
    chutes_api_base: str = _var("CHUTES_API_BASE", _str, "https://api.chutes.ai", "Chutes management API (utilization); the simulator in demo mode")
    chutes_inference_base: str = _var("CHUTES_INFERENCE_BASE", _str, "https://llm.chutes.ai/v1", "OpenAI-compatible Chutes inference host; the simulator in demo mode")
    # --- proxy
    litellm_master_key: Secret = _var("LITELLM_MASTER_KEY", _secret, "", "Key clients send as 'Authorization: Bearer ...' to the proxy (required)")
    litellm_host: str = _var("LITELLM_HOST", _str, "0.0.0.0", "Address the proxy binds")
    litellm_port: int = _var("LITELLM_PORT", _port, "4000", "Port the proxy listens on (natively); with Compose, the host port of the front door (the proxies listen on 4000 inside)")
    litellm_workers: int = _var("LITELLM_WORKERS", _pos_int, "2", "Worker processes per proxy replica")
    routing_strategy: str = _var("ROUTING_STRATEGY", _choice(*ROUTING_STRATEGIES), "headroom", _STRATEGY_DOC)
    routing_slow_ratio: float = _var("ROUTING_SLOW_RATIO", _slow_ratio, "1.5", "headroom: a chute whose typical request takes more than this many times as long as on the fleet's median chute serves only as overflow; 0 = off")
    routing_free_fraction: bool = _var("ROUTING_FREE_FRACTION", _bool, "false", "headroom: among chutes with a free slot prefer the larger free fraction (balances utilization) instead of more free slots; measured on the real stack: 1.5-1.7x the upstream 429s, no latency gain (BENCHMARKS.md)")
    routing_rate_limit_prior: float = _var("ROUTING_RATE_LIMIT_PRIOR", _nonneg_float, "10", "headroom: the Utilization API's rate_limit_ratio (5 min) counts as this many attempts of evidence that a chute refuses a share of requests at any load, until the worker's own attempts outweigh it; 0 = only the worker's own 429s")
    routing_affinity: bool = _var("ROUTING_AFFINITY", _bool, "true", "headroom: the turns of a conversation go to the chute that served it (its prefix cache) while that chute has room within ROUTING_AFFINITY_BOUND; false = every request picked alone")
    routing_affinity_bound: float = _var("ROUTING_AFFINITY_BOUND", _affinity_bound, "2.0", "A session keeps its chute while that chute's load stays within this many times its share of the fleet's load (consistent hashing with bounded loads)")
    routing_affinity_keys: tuple[str, ...] = _var("ROUTING_AFFINITY_KEYS", _key_sources, "header,prompt_cache_key,metadata,user,prefix", "Where a session key comes from, first match wins: header (x-session-id and coding agents' session headers), prompt_cache_key, metadata (Anthropic metadata.user_id), user, prefix (hash of system prompt + first user message)")
    routing_wait_seconds: float = _var("ROUTING_WAIT_SECONDS", _nonneg_float, "2", "When every chute a request may use is estimated full, hold it up to this long for a slot to free (first come, first served per worker) instead of sending it to a full chute; then it is sent anyway; 0 = never wait")
    snapshot_stale_seconds: float = _var("SNAPSHOT_STALE_SECONDS", _pos_float, "120", "A snapshot the poller fetched longer ago than this is ignored; routing runs on live signals alone")
    snapshot_refresh_seconds: float = _var("SNAPSHOT_REFRESH_SECONDS", _pos_float, "5", "How often each proxy worker re-reads the snapshot besides pub/sub announcements")
    inflight_publish_seconds: float = _var("INFLIGHT_PUBLISH_SECONDS", _pos_float, "1", "How often each proxy worker publishes its in-flight counts for the other replicas")
    proxy_max_body_bytes: int = _var("PROXY_MAX_BODY_BYTES", _pos_int, "8388608", "Completion requests with a larger body are refused with 413")
    proxy_header_timeout_seconds: float = _var("PROXY_HEADER_TIMEOUT_SECONDS", _pos_float, "30", "A client that has not sent its whole request line and headers after this long gets 408 and is disconnected (slow-loris)")
    proxy_body_timeout_seconds: float = _var("PROXY_BODY_TIMEOUT_SECONDS", _pos_float, "60", "A client that has not sent its whole completion request body after this long gets 408 (slow clients)")
    proxy_drain_seconds: float = _var("PROXY_DRAIN_SECONDS", _nonneg_float, "5", "On SIGTERM the proxy keeps serving this long while /readyz and LiteLLM's /health/* answer 503 (/livez stays 200), so a load balancer (HAProxy: checks every 2 s, down after 2 failures) stops sending it requests before it stops accepting them; then open requests get up to 20 s; 0 = stop at once")
    proxy_max_concurrent: int = _var("PROXY_MAX_CONCURRENT", _nonneg_int, "512", "Completion requests one proxy worker serves at once (upstream time included); past it and the queue, a fast 503 with Retry-After in the API's shape; 0 = no bound (size: requests/s per worker x request seconds; docs/RUNNING-THE-STACK.md)")
    proxy_queue: int = _var("PROXY_QUEUE", _nonneg_int, "64", "Completion requests one worker holds waiting for a place when PROXY_MAX_CONCURRENT are in; more get a 503 at once")
    proxy_queue_seconds: float = _var("PROXY_QUEUE_SECONDS", _pos_float, "2", "How long a request waits in a worker's admission queue before its 503")
    proxy_request_timeout_seconds: float = _var("PROXY_REQUEST_TIMEOUT_SECONDS", _pos_float, "600", "Live in-flight bookkeeping forgets a request after this long (client gone, no callback)")
    retry_budget_percent: float = _var("RETRY_BUDGET_PERCENT", _percent, "20", "Retries on another chute that fail again are held to this share of the request rate over 10 s (plus 2 per second), so an outage is not amplified into a retry storm; a retry that served its request is refunded; 0 = retry only within that floor")
    proxy_metrics_public: bool = _var("PROXY_METRICS_PUBLIC", _bool, "false", "false: /metrics answers only loopback clients or the master key; true: anyone who reaches the port (Compose, Swarm and Kubernetes set it: the port is on their internal network only)")
    proxy_access_log: bool = _var("PROXY_ACCESS_LOG", _bool, "false", "true: one log line per request (method, route, status, chute, duration; never a prompt or a key)")
    # --- poller
    poll_interval_seconds: float = _var("POLL_INTERVAL_SECONDS", _pos_float, "30", "Seconds between utilization polls")
    poll_timeout_seconds: float = _var("POLL_TIMEOUT_SECONDS", _pos_float, "10", "Timeout of one utilization request")
    poll_max_body_bytes: int = _var("POLL_MAX_BODY_BYTES", _pos_int, "33554432", "A utilization answer larger than this is rejected whole")
    snapshot_ttl_seconds: float = _var("SNAPSHOT_TTL_SECONDS", _pos_float, "600", "The snapshot expires from Redis when no poller refreshes it for this long")
    poller_host: str = _var("POLLER_HOST", _str, "0.0.0.0", "Address the poller's /metrics and /healthz bind")
    poller_port: int = _var("POLLER_PORT", _port, "9101", "Port of the poller's /metrics and /healthz")
    poller_healthy_seconds: float = _var("POLLER_HEALTHY_SECONDS", _pos_float, "120", "/healthz answers 503 when the last successful poll is older than this")
    # --- simulator
    sim_host: str = _var("SIM_HOST", _str, "0.0.0.0", "Address the simulator binds")
    sim_port: int = _var("SIM_PORT", _port, "8080", "Port of the simulator")
    sim_fleet_path: str = _var("SIM_FLEET_PATH", _str, "", "Simulator fleet YAML; empty = the chutes of LITELLM_CONFIG_PATH with default capacities")
    utilization_refresh_seconds: float = _var("UTILIZATION_REFRESH_SECONDS", _pos_float, "60", "The simulator recomputes /chutes/utilization only this often (stale like the real one)")
    sim_filler_entries: int = _var("SIM_FILLER_ENTRIES", _nonneg_int, "500", "Extra utilization entries for chutes outside the fleet (realistic response size)")
    sim_seed: int = _var("SIM_SEED", _nonneg_int, "0", "Random seed of the simulator (0 = from the OS)")
    sim_time_scale: float = _var("SIM_TIME_SCALE", _pos_float, "1", "Multiplies every simulated latency (0.01 = 100x faster)")
    sim_cache_scale: float = _var("SIM_CACHE_SCALE", _pos_float, "1", "Multiplies every simulated KV-cache capacity: set it to the factor a benchmark shortens think times by, so as much traffic passes through a cache between two turns of a session")
    sim_admin_token: Secret = _var("SIM_ADMIN_TOKEN", _secret, "", "If set, the simulator's /admin routes require 'Authorization: Bearer <token>'")

    # ------------------------------------------------------------ building
    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> "Settings":
        """Parse from a mapping of variable name -> raw string; absent names take defaults."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            env = f.metadata["env"]
            raw = values.get(env)
            if raw is None:
                raw = f.metadata["default"]
            try:
                kwargs[f.name] = f.metadata["parse"](str(raw))
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{env}: invalid value: {exc}") from None
        return cls(**kwargs)

    def require(self, *names: str) -> None:
        """Stop start-up when a required (usually secret) setting is empty, naming it."""
        missing = [self.env_name(n) for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError(", ".join(missing) + " is required but not set (see .env.example)")

    @staticmethod
    def env_name(attr: str) -> str:
        for f in fields(Settings):
            if f.name == attr:
                return f.metadata["env"]
        raise KeyError(attr)

    def secrets(self) -> list[str]:
        """Secret values, for the log redaction filter."""
        return [v.get() for v in vars(self).values() if isinstance(v, Secret) and v]

    def __repr__(self) -> str:
        body = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Settings({body})"


# Read by Docker Compose or the scripts, not by the Python services (documented in .env.example).
DEPLOYMENT_VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("GRAFANA_ADMIN_PASSWORD", "", "Grafana admin password (Compose; required, there is no default)"),
    ("GRAFANA_ADMIN_USER", "admin", "Grafana admin user (Compose)"),
    ("GRAFANA_PORT", "3000", "Host port of Grafana (Compose)"),
    ("PROXY_REPLICAS", "2", "Proxy replicas behind the front load balancer (Compose)"),
    ("PROMETHEUS_RETENTION", "15d", "Prometheus TSDB retention (Compose)"),
    ("CHUTES_LB_TAG", "dev", "Tag of the three images Compose builds"),
    ("CHUTES_LB_RUN_DIR", "/tmp/chutes-lb", "scripts/run-proxy.sh: pid files, logs, the recorded run (run.env), the generated demo key (demo.env), the proxy's metrics dir"),
    ("CHUTES_LB_PROXY_LOG", "/tmp/litellm-proxy.log", "scripts/run-proxy.sh: the proxy's log file"),
    ("CHUTES_LB_REDIS_PORT", "6389", "scripts/run-proxy.sh: port of the local redis-server, or redis:7.4-alpine container, it starts when REDIS_URL is unset"),
)
_SECRET_NAMES = ("CHUTES_API_KEY", "LITELLM_MASTER_KEY", "SIM_ADMIN_TOKEN", "GRAFANA_ADMIN_PASSWORD")


def env_example() -> str:
    """The text of .env.example: every variable, its default and meaning (secrets left empty)."""
    lines = ["# Every variable the project reads. Copy to .env and edit; never commit .env.",
             "# Precedence for the Python services: process environment, then .env, then these defaults."]
    for title, rows in (("services (src/chutes_lb/settings.py)", variables()), ("deployment (Compose, scripts)", list(DEPLOYMENT_VARIABLES))):
        lines += ["", f"# ===== {title}"]
        for name, default, doc in rows:
            lines += ["", f"# {doc}", f"{name}=" if name in _SECRET_NAMES else f"{name}={default}"]
    return "\n".join(lines) + "\n"


def variables() -> list[tuple[str, str, str]]:
    """(name, default, description) of every variable, for docs and the .env.example check."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in fields(Settings)]


def load_settings(environ: Mapping[str, str] | None = None, dotenv_path: str | os.PathLike[str] | None = ".env") -> Settings:
    """Environment first, then ``.env`` (python-dotenv), then defaults."""
    merged: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return Settings.from_mapping(merged)


if __name__ == "__main__":  # python -m chutes_lb.settings > .env.example
    print(env_example(), end="")
