"""Drain on SIGTERM: keep serving while the health checks say "going away", then stop.

Without it, a stopping replica loses requests. uvicorn closes its listening socket at once on
SIGTERM, but with several workers the parent process still holds that socket until every worker
has exited, so the kernel keeps completing connections into its backlog that nobody accepts. A
front door that sent a request on one of them (HAProxy learns of the stop only from its next
failed checks) sees the connection reset after the request was sent: it may not retry that, and
the client loses the request (the rolling-restart test lost ~1 in 300 this way).

So, on the first SIGTERM of a worker, :class:`Drain` marks the worker as draining (the front
middleware then answers ``/readyz`` and LiteLLM's ``/health/*`` with 503 while ``/livez`` stays
200, so Kubernetes does not restart the pod), serves every request that still arrives, and only
after ``seconds`` hands the signal to uvicorn's own handler, which stops accepting and gives open
requests their graceful-shutdown time. Further SIGTERMs during the drain are ignored: a stop of
the whole process group (``scripts/run-proxy.sh stop``) reaches each worker twice, directly and
from the uvicorn parent. SIGINT (Ctrl-C) is not delayed.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Callable

__all__ = ["Drain"]

log = logging.getLogger("chutes_lb.proxy")

class Drain:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.since: float | None = None  # when the drain began (clock time), None while serving normally

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self, then: Callable[[], object]) -> bool:
        """Start draining; ``then`` runs once, ``seconds`` later (on a timer thread). False when a
        drain is already under way (nothing is scheduled)."""
        if self.since is not None:
            return False
        self.since = self._clock()
        if self.seconds <= 0:
            then()
            return True
        timer = threading.Timer(self.seconds, then)
        timer.daemon = True
        timer.start()
        return True

    def install(self) -> bool:
        """Wrap the process's current SIGTERM handler (uvicorn's, when called from the app factory
        inside a uvicorn worker). False, and nothing changes, when there is nothing to wrap, the
        drain is off, or this is not the main thread."""
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.begin(lambda: previous(sig, None)):
                log.warning("SIGTERM: draining for %.0f s (health checks answer 503; requests are still served), then stopping",
                            self.seconds)

        signal.signal(signal.SIGTERM, on_sigterm)
        return True
