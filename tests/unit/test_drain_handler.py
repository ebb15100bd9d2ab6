"""Drain (proxy/drain.py): the first SIGTERM starts the drain and reaches the wrapped handler only
after the drain; later ones are ignored; off (0 s) wraps nothing."""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Iterator

import pytest

from chutes_lb.proxy.drain import Drain


@pytest.fixture
def uvicorn_like() -> Iterator[list[tuple[int, float]]]:
    """A SIGTERM handler standing in for uvicorn's: records (signal, when); restored afterwards."""
    calls: list[tuple[int, float]] = []

    def handler(sig: int, frame: object) -> None:
        calls.append((sig, time.monotonic()))

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait(pred, secs: float) -> bool:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def test_first_sigterm_drains_then_reaches_the_wrapped_handler_once(uvicorn_like) -> None:
    drain = Drain(0.3)
    assert drain.install() and not drain.draining
    t0 = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(lambda: drain.draining, 2)
    assert uvicorn_like == []  # still serving
    os.kill(os.getpid(), signal.SIGTERM)  # a group stop reaches a worker twice: ignored
    assert _wait(lambda: len(uvicorn_like) == 1, 5)
    assert uvicorn_like[0][0] == signal.SIGTERM and uvicorn_like[0][1] - t0 >= 0.3
    time.sleep(0.4)
    assert len(uvicorn_like) == 1


def test_off_wraps_nothing(uvicorn_like) -> None:
    drain = Drain(0.0)
    assert not drain.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(lambda: len(uvicorn_like) == 1, 2) and not drain.draining


def test_begin_without_a_signal_runs_then_after_the_drain() -> None:
    ran = threading.Event()
    drain = Drain(0.05, clock=lambda: 42.0)
    assert drain.begin(ran.set) and drain.since == 42.0
    assert not drain.begin(ran.set)  # one drain
    assert ran.wait(2)
