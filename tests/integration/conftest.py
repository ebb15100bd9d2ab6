"""Integration fixtures: ``simulator`` starts a simulator process per call and stops it after."""
from __future__ import annotations

from typing import Any, Callable, Iterator

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
