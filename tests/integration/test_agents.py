"""The real coding agents (pinned in agents/package.json) against the real proxy and simulator.

Claude Code (``claude -p``, Anthropic Messages), Codex CLI (``codex exec``, OpenAI Responses)
and OpenCode (``opencode run``, chat completions), each with a fresh temporary HOME, the
README's configuration and nothing but loopback (``agent_runner``: a tripwire records any
attempt to go further). Each agent answers a plain prompt, then completes a tool turn: the
prompt carries the simulator's ``sim:call`` directive, the agent really runs its file-reading
tool on a file in a temporary project, and the simulator quotes the tool result back
(``Tool result: ...``), so the secret word in the final output proves the tool ran and its
result went back through the proxy. The proxy's /metrics and access log show every request was
decided by our hook under the agent's API label and answered by a configured chute
(``x-litellm-model-id``). One agent at a time: they are CPU-heavy on 2 cores.

Skipped, with the reason, when ``agents/node_modules`` is missing (``npm ci --prefix agents``).
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from chutes_lb.devstack import metric_value
from tests.integration.agent_runner import API, SECRET, AgentRun, run_agent, tool_directive, unavailable_reason
from tests.integration.proxy_stack import MASTER_KEY, NAMES, Stack, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

ROUTE = {"messages": "/v1/messages", "responses": "/v1/responses", "chat": "/v1/chat/completions"}
RUN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    redis = request.getfixturevalue("redis_service")  # only once the agents are there
    s = start_stack(redis.url, f"test-coding-agents-{uuid.uuid4().hex[:8]}", time_scale=0.1,
                    proxy_env={"PROXY_ACCESS_LOG": "true"})
    try:
        yield s
    finally:
        s.stop()


class Observed:
    """What the proxy recorded while one agent ran: metric deltas per API and its access log lines."""

    NAMES_ = ("chutes_lb_routing_decisions_total", "chutes_lb_upstream_requests_total", "chutes_lb_requests_total")

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.log = stack.tmp / "proxy.log"
        self.offset = self.log.stat().st_size
        self.before = self._read()

    def _read(self) -> dict[tuple[str, str], float]:
        text = self.stack.proxy.metrics_text()
        return {(name, api): metric_value(text, name, {"api": api}) for name in self.NAMES_ for api in ROUTE}

    def finish(self) -> None:
        after = self._read()
        self.delta = {key: after[key] - self.before[key] for key in after}
        text = self.stack.proxy.metrics_text()
        self.success_chutes = {
            chute for chute in NAMES.values()
            if metric_value(text, "chutes_lb_upstream_requests_total", {"chute": chute, "outcome": "success"}) > 0}
        with self.log.open("rb") as f:
            f.seek(self.offset)
            self.lines = [ln for ln in f.read().decode(errors="replace").splitlines() if "chutes_lb.access" in ln]

    def access(self, route: str) -> list[str]:
        return [ln for ln in self.lines if f" POST {route} " in ln]


def check_routed(obs: Observed, api: str, min_requests: int) -> None:
    """Every model request of the run went through our hook under ``api`` (and no other API),
    was answered 200 by a configured chute, and every upstream attempt was counted."""
    d = obs.delta
    for other in ROUTE:
        if other != api:
            assert d[("chutes_lb_routing_decisions_total", other)] == 0, (other, d)
    decisions = d[("chutes_lb_routing_decisions_total", api)]
    attempts = d[("chutes_lb_upstream_requests_total", api)]
    requests = d[("chutes_lb_requests_total", api)]
    assert decisions >= min_requests, d
    assert attempts == decisions, d  # each decision is one attempt, each attempt closed and counted
    assert requests >= min_requests, d
    lines = obs.access(ROUTE[api])
    assert len(lines) >= min_requests, obs.lines
    for line in lines:  # the chute comes from the x-litellm-model-id header the agent received
        assert " 200 chute=" in line and line.split(" chute=")[1].split()[0] in NAMES.values(), line


def settle(obs: Observed, api: str) -> None:
    """Wait (bounded) until the proxy has closed the run's attempts: LiteLLM's success callbacks,
    which count them, may run just after the last byte reached the agent."""
    deadline = time.monotonic() + 10
    while True:
        obs.finish()
        open_ = metric_value(obs.stack.proxy.metrics_text(), "chutes_lb_inflight_requests")
        d = obs.delta
        if open_ == 0 and d[("chutes_lb_upstream_requests_total", api)] >= d[("chutes_lb_routing_decisions_total", api)]:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"attempts not closed 10 s after the agent finished: in-flight {open_}, {d}")
        time.sleep(0.5)


def run(stack: Stack, tmp_path: Path, agent: str, prompt: str, **kw) -> tuple[AgentRun, Observed]:  # type: ignore[no-untyped-def]
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    obs = Observed(stack)
    result = run_agent(agent, prompt, base_url=stack.url, key=MASTER_KEY, home=tmp_path / "home", workdir=project,
                       timeout=RUN_TIMEOUT, **kw)
    obs.finish()
    assert result.rc == 0, result.describe() + "\n--- proxy access log:\n" + "\n".join(obs.lines)
    assert result.outbound == [], "left loopback:\n" + result.describe()
    settle(obs, API[agent])
    print(f"[agents] {agent}: {result.seconds:.1f}s; proxy: " + "; ".join(ln.split("chutes_lb.access: ")[-1] for ln in obs.lines if "/metrics" not in ln))
    return result, obs


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_agent_answers_a_plain_prompt(stack: Stack, tmp_path: Path, agent: str) -> None:
    result, obs = run(stack, tmp_path, agent, "say hi")
    assert "quick brown fox" in result.stdout, result.describe()  # the simulator's text answer
    check_routed(obs, API[agent], 1)


@pytest.mark.parametrize("agent", ["claude", "codex", "opencode"])
def test_agent_reads_a_file_with_its_tool(stack: Stack, tmp_path: Path, agent: str) -> None:
    secret = tmp_path / "project" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text(f"the secret word is {SECRET}\n")
    result, obs = run(stack, tmp_path, agent, "Read the notes file and tell me the secret word. " + tool_directive(agent, secret))
    # The word is only in the file: it reaches the output only if the agent ran its tool and
    # sent the result back through the proxy (the simulator quotes it: "Tool result: ...").
    assert SECRET in result.stdout and "Tool result:" in result.stdout, result.describe()
    check_routed(obs, API[agent], 2)  # the tool call, then the answer to its result


def test_claude_code_with_its_own_model_names_and_x_api_key(stack: Stack, tmp_path: Path) -> None:
    """No model variables: Claude Code asks for claude-* names, which model_group_alias maps
    onto chutes-models. The key as ANTHROPIC_API_KEY, which Claude Code sends as x-api-key."""
    result, obs = run(stack, tmp_path, "claude", "say hi", claude_model=None, claude_key_var="ANTHROPIC_API_KEY")
    assert "quick brown fox" in result.stdout, result.describe()
    check_routed(obs, "messages", 1)
