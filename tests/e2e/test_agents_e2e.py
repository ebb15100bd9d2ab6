"""The real coding agents through the Compose stack's front door (HAProxy ``:4000`` -> two proxy
replicas -> the demo simulator), issue 12's "Done when". One tool turn per agent, the README's
settings, a fresh HOME, loopback only (agent_runner): Claude Code reads a file with Read, Codex
with exec_command, OpenCode with read, and the secret word in the file must come back in the
final output. Prometheus, which scrapes every replica, must then show the requests decided by
our hook under the agent's API label and served by configured chutes.

Shares the session's stack (tests/e2e/conftest.py). This file sorts before test_stack.py, whose
last test takes the stack down. Skipped, with the reason, when agents/node_modules is missing."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.compose_stack import ROOT, Stack, say, wait_for
from tests.integration.agent_runner import API, SECRET, run_agent, tool_directive, unavailable_reason

# The first e2e test pays for the session fixture (image build up to 900 s + up to 300 s).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

CHUTES = {entry["litellm_params"]["model"].removeprefix("openai/")
          for entry in yaml.safe_load((ROOT / "proxy" / "litellm-config.yaml").read_text())["model_list"]}


@pytest.fixture(scope="module")
def agents_stack(request: pytest.FixtureRequest) -> Stack:
    reason = unavailable_reason()
    if reason:  # before the stack: no build for nothing
        pytest.skip(reason)
    return request.getfixturevalue("stack")


def _counted(stack: Stack, api: str) -> tuple[float, float, set[str]]:
    """Decisions and successful upstream attempts for ``api`` (summed over the replicas), and
    the chutes that served them, as Prometheus last scraped them."""
    decisions = sum(float(r["value"][1]) for r in stack.query(f'chutes_lb_routing_decisions_total{{api="{api}"}}'))
    rows = stack.query(f'sum by (chute) (chutes_lb_upstream_requests_total{{api="{api}", outcome="success"}})')
    served = {r["metric"]["chute"]: float(r["value"][1]) for r in rows}
    return decisions, sum(served.values()), {c for c, n in served.items() if n > 0}


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_agent_completes_a_tool_turn_through_the_front_door(agents_stack: Stack, tmp_path: Path, agent: str) -> None:
    stack, api = agents_stack, API[agent]
    project = tmp_path / "project"
    project.mkdir()
    notes = project / "notes.txt"
    notes.write_text(f"the secret word is {SECRET}\n")
    before = _counted(stack, api)
    result = run_agent(agent, "Read the notes file and tell me the secret word. " + tool_directive(agent, notes),
                       base_url=stack.api_base, key=stack.master_key, home=tmp_path / "home", workdir=project, timeout=90)
    say(f"{agent} through :{stack.api_port}: rc {result.rc} in {result.seconds:.1f}s")
    assert result.rc == 0, result.describe()
    assert result.outbound == [], "left loopback:\n" + result.describe()
    assert SECRET in result.stdout and "Tool result:" in result.stdout, result.describe()

    def counted() -> tuple[float, float, set[str]] | None:  # the tool call and the answer to its result
        now = _counted(stack, api)
        return now if now[0] - before[0] >= 2 and now[1] - before[1] >= 2 else None

    decisions, attempts, chutes = wait_for(counted, 60, interval=2, what=f"{agent}'s requests in Prometheus (api={api})")
    assert chutes and chutes <= CHUTES, chutes
