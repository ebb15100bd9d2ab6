"""The README's "Coding agents" settings are the ones the agent tests run (agent_runner), so a
change to one without the other fails here, without Node or the agents installed."""
from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.integration import agent_runner as ar

pytestmark = pytest.mark.unit


def _section() -> str:
    text = (ar.ROOT / "README.md").read_text()
    start = text.index("## Coding agents\n")
    return text[start:text.index("\n## ", start + 1)]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), re.S)


def test_claude_code_settings_match_the_tested_ones() -> None:
    claude, _opencode = (json.loads(b) for b in _blocks("json"))
    assert claude == ar.claude_settings()
    tested = ar.claude_settings("http://127.0.0.1:1", "k", test=True)["env"]
    assert set(tested) - set(claude["env"]) == {"CLAUDE_CODE_MAX_RETRIES"}  # the one test-only bound
    assert "CLAUDE_CODE_MAX_RETRIES" in _section()


def test_codex_config_matches_the_tested_one() -> None:
    (block,) = _blocks("toml")
    assert tomllib.loads(block) == tomllib.loads(ar.codex_config())
    tested = tomllib.loads(ar.codex_config("http://127.0.0.1:1", test=True))
    assert set(tested["model_providers"]["chutes-lb"]) - set(tomllib.loads(block)["model_providers"]["chutes-lb"]) == {
        "request_max_retries", "stream_max_retries"}
    assert f'export {ar.KEY_ENV}=' in _section()


def test_opencode_config_and_environment_match_the_tested_ones() -> None:
    _claude, opencode = (json.loads(b) for b in _blocks("json"))
    assert opencode == ar.opencode_config()
    for name in ar.OPENCODE_ENV:
        assert f"{name}=1" in _section(), name


def test_the_pinned_versions_named_in_the_readme_are_the_locked_ones() -> None:
    lock = json.loads((ar.AGENTS_DIR / "package-lock.json").read_text())["packages"]
    names = {"claude": "Claude Code", "codex": "Codex CLI", "opencode": "OpenCode"}
    for agent, version in ar.pinned_versions().items():
        assert lock[f"node_modules/{ar.PACKAGES[agent]}"]["version"] == version
        assert f"{names[agent]} {version}" in _section(), agent
