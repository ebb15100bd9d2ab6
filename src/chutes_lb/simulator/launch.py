"""Start a simulator process for tests, benchmarks and scripts: ``SimulatorProcess``.

    with SimulatorProcess([{"chute_id": ..., "name": "m", "instances": 1}], time_scale=0.01) as sim:
        client = openai.OpenAI(base_url=sim.openai_base, api_key="x")
        sim.set_chute("m", error_rate=1.0)

Fleet: a list of chute dicts (written to a temporary fleet YAML), a full fleet mapping, or a
path; ``litellm_config`` sets ``LITELLM_CONFIG_PATH`` (the chutes of a ``from_proxy_config``
fleet, or of no fleet). Waits on ``/healthz`` (bounded) and stops the process (bounded) on exit.
"""
from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from chutes_lb.localstack import ManagedProcess, free_port, python_module, wait_http

__all__ = ["SimulatorProcess", "AdminError"]


class AdminError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class SimulatorProcess:
    def __init__(self, fleet: Sequence[Mapping[str, Any]] | Mapping[str, Any] | str | os.PathLike[str] | None = None, *,
                 time_scale: float = 0.01, refresh_seconds: float = 60.0, filler_entries: int = 0, seed: int = 1,
                 admin_token: str = "", port: int | None = None, env: Mapping[str, str] | None = None,
                 prefix: Sequence[str] = (), start_timeout: float = 20.0, litellm_config: str | os.PathLike[str] | None = None,
                 cache_scale: float = 1.0) -> None:
        self.port = port or free_port()
        self.admin_token = admin_token
        self.start_timeout = start_timeout
        self._tmpdir = tempfile.mkdtemp(prefix="chutes-sim-")
        if fleet is None:
            fleet_path = ""
        elif isinstance(fleet, (str, os.PathLike)):
            fleet_path = str(fleet)
        else:
            data = {"chutes": list(fleet)} if not isinstance(fleet, Mapping) else dict(fleet)
            fleet_path = os.path.join(self._tmpdir, "fleet.yaml")
            Path(fleet_path).write_text(yaml.safe_dump(data, sort_keys=False))
        self.fleet_path = fleet_path
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}
        child_env.update({
            "SIM_HOST": "127.0.0.1", "SIM_PORT": str(self.port), "SIM_FLEET_PATH": fleet_path,
            "SIM_TIME_SCALE": repr(time_scale), "SIM_CACHE_SCALE": repr(cache_scale), "UTILIZATION_REFRESH_SECONDS": repr(refresh_seconds),
            "SIM_FILLER_ENTRIES": str(filler_entries), "SIM_SEED": str(seed), "SIM_ADMIN_TOKEN": admin_token,
            "LOG_LEVEL": child_env.get("LOG_LEVEL", "info"),
        })
        if litellm_config is not None:  # the chutes of a from_proxy_config fleet (or of no fleet)
            child_env["LITELLM_CONFIG_PATH"] = str(litellm_config)
        child_env.update(env or {})
        self.process = ManagedProcess(f"simulator-{self.port}", [*prefix, *python_module("chutes_lb.simulator")], env=child_env,
                                      log_path=os.path.join(self._tmpdir, "simulator.log"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base(self) -> str:
        return self.base_url + "/v1"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "SimulatorProcess":
        self.process.start()
        try:
            wait_http(self.base_url + "/healthz", self.start_timeout, proc=self.process)
        except BaseException:
            self.process.stop(5)
            raise
        return self

    def stop(self) -> int | None:
        return self.process.stop(5)

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.process.log_text()

    # ---------------------------------------------------------------- admin
    def admin(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AdminError(exc.code, exc.read().decode(errors="replace")) from None

    def state(self) -> dict[str, Any]:
        return self.admin("GET", "/admin/state")

    def chute_state(self, key: str) -> dict[str, Any]:
        return next(c for c in self.state()["chutes"] if key in (c["chute_id"], c["name"]))

    def set_chute(self, key: str, **fields: Any) -> dict[str, Any]:
        return self.admin("POST", "/admin/chutes/" + key, fields)

    def set_account(self, **fields: Any) -> dict[str, Any]:
        """``POST /admin/account``: injected errors for every chute, quota, rate-limit headers."""
        return self.admin("POST", "/admin/account", fields)

    def chute_record(self, key: str) -> dict[str, Any]:
        """``GET /chutes/{key}`` (the real API's chute record); AdminError on 404."""
        return self.admin("GET", "/chutes/" + key)

    def set_utilization(self, **fields: Any) -> dict[str, Any]:
        return self.admin("POST", "/admin/utilization", fields)

    def refresh_utilization(self) -> int:
        return int(self.admin("POST", "/admin/utilization/refresh", {})["version"])

    def reset(self) -> dict[str, Any]:
        return self.admin("POST", "/admin/reset", {})

    def utilization(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """(status, raw body) of ``GET /chutes/utilization``."""
        try:
            with urllib.request.urlopen(self.base_url + "/chutes/utilization", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
