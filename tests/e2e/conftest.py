"""e2e fixtures: one real Compose stack per session, always torn down with ``down -v``."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e import compose_stack
from tests.e2e.compose_stack import Stack, open_stack


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Iterator[Stack]:
    compose_stack.CAPTURE_MANAGER = pytestconfig.pluginmanager.getplugin("capturemanager")
    yield from open_stack()
