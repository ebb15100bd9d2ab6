"""Fleets shared by the simulator integration tests (latencies x SIM_TIME_SCALE=0.1), and ``module_simulator``."""
from typing import Any, Iterator

import pytest

from chutes_lb.simulator.launch import SimulatorProcess

FAST_ID = "11111111-1111-4111-8111-111111111111"
SLOW_ID = "22222222-2222-4222-8222-222222222222"
COLD_ID = "33333333-3333-4333-8333-333333333333"
TIME_SCALE = 0.1
FLEET = [
    # ~0.01 s to first token, ~0.02 s for 20 tokens
    {"chute_id": FAST_ID, "name": "sim/fast", "instances": 2, "concurrency": 4,
     "ttft": {"median": 0.1, "sigma": 0}, "tps": {"median": 100, "sigma": 0}, "output_tokens": {"median": 20, "sigma": 0}},
    # holds each request ~1 s (ttft 10 x 0.1): capacity 3
    {"chute_id": SLOW_ID, "name": "sim/slow", "instances": 1, "concurrency": 3,
     "ttft": {"median": 10, "sigma": 0}, "tps": {"median": 1000, "sigma": 0}, "output_tokens": {"median": 5, "sigma": 0}},
    {"chute_id": COLD_ID, "name": "sim/cold", "instances": 0, "concurrency": 4},
]


def module_simulator(*args: Any, **kwargs: Any) -> Any:
    """A module-scoped ``sim`` fixture, one simulator for a module: ``sim = module_simulator(FLEET, time_scale=0.1)``.

    Pair it with the ``sim_http`` fixture (conftest.py), which resets it before each test.
    """
    @pytest.fixture(scope="module")
    def sim() -> Iterator[SimulatorProcess]:
        with SimulatorProcess(*args, **kwargs) as s:
            yield s

    return sim
