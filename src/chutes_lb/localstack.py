"""Start and stop the project's processes on loopback, with bounded waits.

Used by the test suite and the benchmarks (through :mod:`chutes_lb.devstack`); ``scripts/run-proxy.sh``
manages its own processes and does not use it. Here: a free port, a child process with its output
in a log file, an HTTP readiness wait, a local ``redis-server``.
Every wait here has a deadline; every stop escalates from SIGTERM to SIGKILL.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["free_port", "child_pids", "wait_http", "wait_port", "ManagedProcess", "RedisServer", "python_module"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float, host: str = "127.0.0.1", proc: "ManagedProcess | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()} before listening on {port}:\n{proc.tail()}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


# Children of a process under wait that started and ended before it answered: more than this is
# a restart loop (uvicorn's supervisor SIGKILLs a worker that does not answer its ping within
# timeout_worker_healthcheck and starts another, forever), not a slow start.
RESTART_LOOP_CHILDREN = 8


def child_pids(pid: int) -> set[int]:
    """The live direct children of ``pid`` (Linux /proc, every thread; empty elsewhere or once it is gone)."""
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(x) for x in children.read_text().split())
        except (OSError, ValueError):
            continue
    return found


def wait_http(url: str, timeout: float, proc: "ManagedProcess | None" = None, expect: int = 200, headers: Mapping[str, str] | None = None) -> None:
    """Poll ``url`` until it answers ``expect``; fail early, with its exit reason and log tail, if
    ``proc`` exits or its children die in a restart loop."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    seen: set[int] = set()
    live: set[int] = set()
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.name} {proc.exit_reason()} while waiting for {url}:\n{proc.tail_or_note()}")
            live = child_pids(proc.pid)
            seen |= live
            if len(seen - live) > RESTART_LOOP_CHILDREN:
                raise RuntimeError(f"{proc.name}: {len(seen - live)} of its child processes started and died while waiting for "
                                   f"{url} (a worker restart loop: does a worker answer its supervisor's ping in time?):\n"
                                   f"{proc.tail_or_note()}")
        try:
            req = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == expect:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code == expect:
                return
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    if proc is None:
        raise TimeoutError(f"{url} did not answer {expect} within {timeout:.0f}s (last: {last})")
    churn = f"; {len(seen - live)} of its {len(seen)} child processes died" if seen else ""
    raise TimeoutError(f"{url} did not answer {expect} within {timeout:.0f}s (last: {last}); {proc.name} still running{churn}:\n"
                       f"{proc.tail_or_note()}")


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class ManagedProcess:
    """A child process in its own session, output to a log file, stopped with bounded waits."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, log_path: str | os.PathLike[str] | None = None, cwd: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix=f"{name.replace('/', '_')}-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ManagedProcess":
        log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def poll(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``timeout``; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self._proc.wait(5)
        return self._proc.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def tail_or_note(self, lines: int = 40) -> str:
        """:meth:`tail`, or a note saying the log is empty (and where it is)."""
        return self.tail(lines) or f"(its log {self.log_path} is empty)"

    def exit_reason(self) -> str:
        """"exited with 3", "was killed by SIGKILL", or "is running"."""
        code = self.poll()
        if code is None:
            return "is running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with {code}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A throw-away ``redis-server`` on a fixed loopback port; can be stopped and restarted."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or ""
        if not self.binary:
            raise FileNotFoundError("redis-server not found: apt-get install redis-server (or set REDIS_URL)")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"]
        self.proc = ManagedProcess(f"redis-{self.port}", argv, log_path=os.path.join(self.dir, "redis.log")).start()
        wait_port(self.port, timeout, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(5)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
