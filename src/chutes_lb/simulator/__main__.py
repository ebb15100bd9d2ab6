"""``python -m chutes_lb.simulator`` / ``chutes-simulator``: serve the simulated fleet."""
from __future__ import annotations

import logging
import sys

from aiohttp import web

from chutes_lb.fleet import FleetError
from chutes_lb.entry import check_requested, config_error, start_service

from chutes_lb.simulator.app import make_app
from chutes_lb.simulator.fleet_config import fleet_from_proxy_config, load_fleet
from chutes_lb.simulator.service import Simulator

log = logging.getLogger("chutes_lb.simulator")


def main(argv: list[str] | None = None) -> int:
    checking = check_requested(argv)
    settings = start_service("chutes-simulator")
    try:
        fleet = (load_fleet(settings.sim_fleet_path, settings.litellm_config_path) if settings.sim_fleet_path
                 else fleet_from_proxy_config(settings.litellm_config_path))
    except FleetError as exc:
        log.error("cannot load the fleet: %s", exc)
        return config_error("chutes-simulator", exc)
    if checking:
        print(f"chutes-simulator: fleet ok: {len(fleet.chutes)} chutes from {fleet.source}")
        return 0
    for warning in fleet.warnings:
        log.warning("%s", warning)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    sim = Simulator(fleet, time_scale=settings.sim_time_scale, refresh_seconds=settings.utilization_refresh_seconds,
                    filler_count=settings.sim_filler_entries, seed=settings.sim_seed, cache_scale=settings.sim_cache_scale)
    app = make_app(sim, settings.sim_admin_token.get())
    log.info("Chutes SIMULATOR (not the real Chutes) serving %d chutes from %s on %s:%d (time scale %g, cache scale %g, "
             "utilization refresh %gs)", len(fleet.chutes), fleet.source, settings.sim_host, settings.sim_port,
             settings.sim_time_scale, settings.sim_cache_scale, settings.utilization_refresh_seconds)
    web.run_app(app, host=settings.sim_host, port=settings.sim_port, access_log=None, print=None,
                handler_cancellation=True, shutdown_timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
