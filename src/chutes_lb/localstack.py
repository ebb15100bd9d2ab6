"""Start and stop the project's processes on loopback, with bounded waits.

Used by the test suite, the benchmarks and ``scripts/run-proxy.sh --demo``: a free port, a
child process with its output in a log file, an HTTP readiness wait, a local ``redis-server``.
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

__all__ = ["free_port", "wait_http", "wait_port", "ManagedProcess", "RedisServer", "python_module"]


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


def wait_http(url: str, timeout: float, proc: "ManagedProcess | None" = None, expect: int = 200, headers: Mapping[str, str] | None = None) -> None:
    """Poll ``url`` until it answers ``expect``; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.poll()} while waiting for {url}:\n{proc.tail()}")
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
    tail = f"\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"{url} did not answer {expect} within {timeout:.0f}s (last: {last}){tail}")


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
