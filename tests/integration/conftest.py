"""Integration fixtures: ``simulator`` starts a simulator process per call and stops it after;
``sim_http`` is an httpx client on a module's ``sim`` (see ``sim_fleets.module_simulator``)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import httpx
import pytest

from chutes_lb.simulator.launch import SimulatorProcess


@pytest.fixture
def simulator() -> Iterator[Callable[..., SimulatorProcess]]:
    """Factory: ``sim = simulator(fleet, time_scale=0.01, refresh_seconds=60, ...)`` (SimulatorProcess args)."""
    started: list[SimulatorProcess] = []

    def start(*args: Any, **kwargs: Any) -> SimulatorProcess:
        sim = SimulatorProcess(*args, **kwargs).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def sim_http(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    """An httpx client on the module's ``sim``, reset to its fleet first (no faults, empty caches, no aliases)."""
    sim.reset()
    with httpx.Client(base_url=sim.base_url, timeout=20) as c:
        yield c
