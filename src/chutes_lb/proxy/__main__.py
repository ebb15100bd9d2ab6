"""``python -m chutes_lb.proxy``: validate settings, prepare the environment, run the proxy.

Fails fast, naming the variable, when ``LITELLM_MASTER_KEY`` is missing or when real mode
(``DEMO_MODE=false``) has no ``CHUTES_API_KEY``. Nothing is fetched from the internet at
start-up (LiteLLM's cost-map download and telemetry are switched off). Workers are uvicorn
processes, each building its app with the factory ``chutes_lb.proxy.app:create_app`` (LiteLLM's
app plus our routes and middleware).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from chutes_lb.entry import check_requested, config_error, start_service
from chutes_lb.fleet import ROUTING_CALLBACK, Fleet, FleetError, read_fleet
from chutes_lb.proxy import environment
from chutes_lb.settings import Settings, SettingsError

log = logging.getLogger("chutes_lb.proxy")

# uvicorn's multi-worker supervisor pings every worker every 0.5 s over a pipe and SIGKILLs one
# that has not answered within ``timeout_worker_healthcheck`` (default 5 s), then starts a new one.
# A worker answers from a thread of its own, started before the app (and LiteLLM) is imported, so
# only a worker that gets no CPU (the machine's cores busy, a new process still starting its
# interpreter) or holds the GIL misses 5 s: a kill then throws away every request in flight on it
# and costs a LiteLLM import (10-30 s of CPU) when the machine has the least to spare. 60 s still
# replaces a hung worker (the container's liveness probe, /livez, is the other net), and fits a
# worker replaced by SIGHUP, which must finish starting (LiteLLM imported) within the same bound.
WORKER_HEALTHCHECK_SECONDS = 60


def check(settings: Settings) -> Fleet:
    """Everything a start would refuse, without starting anything (keys, the model list, the hook)."""
    environment.validate(settings)
    fleet = read_fleet(Path(settings.litellm_config_path).resolve())
    if ROUTING_CALLBACK not in fleet.callbacks:
        raise FleetError(f"{settings.litellm_config_path}: litellm_settings.callbacks must list {ROUTING_CALLBACK!r} "
                         "(without it nothing routes: LiteLLM would pick chutes blindly)")
    return fleet


def prepare_environment(settings: Settings, environ: dict[str, str]) -> None:
    """Validate, then set what LiteLLM and the workers read (chutes_lb.proxy.environment) and
    empty the prometheus-client multiprocess directory the workers share."""
    fleet = check(settings)
    for warning in fleet.warnings:
        log.warning("config: %s", warning)
    chutes = fleet.chutes
    environment.apply(settings, environ)
    mp_dir = environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(tempfile.gettempdir(), f"chutes-lb-metrics-{settings.litellm_port}")
    shutil.rmtree(mp_dir, ignore_errors=True)
    os.makedirs(mp_dir, exist_ok=True)
    environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    environ["CHUTES_LB_WORKER_OF"] = str(os.getpid())  # the workers die with this process
    log.info("%d chutes configured from %s: %s", len(chutes), environ["CONFIG_FILE_PATH"], ", ".join(c.name for c in chutes))


def main(argv: list[str] | None = None) -> int:
    checking = check_requested(argv)
    settings = start_service("chutes-lb proxy")
    try:
        if checking:
            fleet = check(settings)
            print(f"chutes-lb proxy: config ok: {len(fleet.chutes)} chutes in {len(fleet.groups)} model groups "
                  f"({settings.litellm_config_path}), {'demo' if settings.demo_mode else 'real'} mode")
            return 0
        prepare_environment(settings, os.environ)  # type: ignore[arg-type]
    except (SettingsError, FleetError) as exc:
        log.error("configuration error: %s", exc)
        return config_error("chutes-lb proxy", exc)
    if settings.demo_mode:
        log.warning("DEMO MODE: routing to the Chutes simulator at %s (no real Chutes traffic)", settings.chutes_inference_base)
    log.info(
        "starting proxy on %s:%d with %d workers, routing strategy %s",
        settings.litellm_host, settings.litellm_port, settings.litellm_workers, settings.routing_strategy,
    )
    import uvicorn

    from chutes_lb.proxy.protocol import HeaderTimeoutProtocol

    uvicorn.run(
        "chutes_lb.proxy.app:create_app",
        factory=True,
        host=settings.litellm_host,
        port=settings.litellm_port,
        workers=settings.litellm_workers,
        loop="uvloop",
        http=HeaderTimeoutProtocol,  # httptools with a header-read timeout (slow-loris)
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
