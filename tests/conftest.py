"""Shared fixtures. Redis is always real: ``REDIS_URL`` if set; else a ``testcontainers`` Redis
when a Docker engine answers; else a local ``redis-server`` on a free port. Never a mock."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Protocol

import pytest

from chutes_lb.localstack import RedisServer, free_port, wait_port
from chutes_lb.proxy.environment import LITELLM_OFFLINE

# Tests that import LiteLLM in-process need the same offline environment the proxy sets.
os.environ.update(LITELLM_OFFLINE)

ROOT = Path(__file__).resolve().parent.parent
REDIS_IMAGE = "redis:7.4-alpine"


class RedisHandle(Protocol):
    url: str

    def kill(self) -> None: ...

    def start(self) -> object: ...


def docker_engine_answers() -> bool:
    if not shutil.which("docker") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.images.get(REDIS_IMAGE)  # no registry here: the image must be local
        return True
    except Exception:
        return False


class _ContainerRedis:
    """A testcontainers Redis on a fixed host port, so a restart keeps its URL."""

    def __init__(self) -> None:
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        from testcontainers.community.redis import RedisContainer

        self.port = free_port()
        self.container = RedisContainer(REDIS_IMAGE).with_bind_ports(6379, self.port)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._running = False

    def start(self) -> "_ContainerRedis":
        if getattr(self.container, "_container", None) is None:
            self.container.start()
        else:
            self.container.get_wrapped_container().start()
        wait_port(self.port, 20)
        self._running = True
        return self

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()
        self._running = False

    def stop(self) -> None:
        try:
            self.container.stop()
        except Exception:
            pass


class _ExternalRedis:
    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> "_ExternalRedis":
        return self

    def kill(self) -> None:
        pytest.skip("cannot kill the Redis that REDIS_URL names")

    def stop(self) -> None:
        pass


def _new_redis(allow_external: bool = True) -> RedisHandle:
    if allow_external and os.environ.get("REDIS_URL"):
        return _ExternalRedis(os.environ["REDIS_URL"])
    if docker_engine_answers():
        return _ContainerRedis().start()
    if shutil.which("redis-server"):
        return RedisServer().start()
    pytest.skip("no Redis: set REDIS_URL, start a Docker engine, or apt-get install redis-server")


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisHandle]:
    """One Redis for the session; tests isolate themselves with ``redis_prefix``."""
    handle = _new_redis()
    yield handle
    handle.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisHandle]:
    """A Redis of the test's own, which it may kill and restart (never the REDIS_URL one)."""
    handle = _new_redis(allow_external=False)
    yield handle
    handle.stop()


@pytest.fixture
def redis_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_url(redis_service: RedisHandle) -> str:
    return redis_service.url
