"""Run the pinned coding agents (``agents/package.json``) hermetically against a proxy.

Used by ``tests/integration/test_agents.py`` (native demo) and ``tests/e2e/test_agents_e2e.py``
(the Compose stack's front door). Each run gets a fresh temporary HOME with every config dir
inside it, an environment built from nothing (``env -i`` style: no inherited proxy variables,
keys or npm settings), stdin closed, its own process group, and a hard timeout.

Hermetic: the settings below switch off every call an agent makes besides the model API
(telemetry, update checks, feature flags, the model catalogue, plugin downloads; see the
README's "Coding agents" section and ``/work/notes/agents.md``). On top of that, every run
points ``HTTPS_PROXY``/``HTTP_PROXY`` at a :class:`Tripwire`, a loopback server that refuses and
records whatever an agent tries to reach besides loopback (``NO_PROXY`` covers loopback), so a
test can assert that nothing left the machine.

The configuration each agent gets is the README's (:func:`claude_settings`,
:func:`codex_config`, :func:`opencode_config` with ``test=False``), plus a few test-only bounds
(fewer retries) so an error ends a run in seconds instead of minutes. A test keeps the README's
code blocks equal to these.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AGENTS_DIR = ROOT / "agents"
NODE_MODULES = AGENTS_DIR / "node_modules"
BINARIES = {
    "claude": NODE_MODULES / ".bin" / "claude",
    "codex": NODE_MODULES / ".bin" / "codex",
    # the platform package itself: the opencode-ai wrapper cannot be locked here (notes/agents.md)
    "opencode": NODE_MODULES / "opencode-linux-x64" / "bin" / "opencode",
}
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "opencode": "opencode-linux-x64"}
# what ``--version`` prints must contain the pinned version
MODEL = "chutes-models"
# the upstream window: unknown model names are otherwise assumed to have 1M tokens (Claude Code)
CONTEXT_TOKENS = 131072
OUTPUT_TOKENS = 32000

# The README's placeholders, so the README's blocks can be compared with what the tests run.
README_BASE = "http://localhost:4000"
README_KEY = "<your LITELLM_MASTER_KEY>"
KEY_ENV = "CHUTES_LB_API_KEY"  # Codex env_key and OpenCode {env:...}: the variable's NAME


def pinned_versions() -> dict[str, str]:
    pkg = json.loads((AGENTS_DIR / "package.json").read_text())
    deps = {**pkg.get("dependencies", {}), **pkg.get("optionalDependencies", {})}
    return {agent: deps[name] for agent, name in PACKAGES.items()}


@functools.cache
def unavailable_reason() -> str | None:
    """Why the agents cannot run here (None: all three installed at the pinned versions)."""
    if not NODE_MODULES.is_dir():
        return "agents/node_modules is missing: run `npm ci --prefix agents` (.ci/run does it when npm is installed)"
    pinned = pinned_versions()
    for agent, binary in BINARIES.items():
        if not os.access(binary, os.X_OK):
            return f"{binary.relative_to(ROOT)} is missing: reinstall with `npm ci --prefix agents`"
        try:
            out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                                 stdin=subprocess.DEVNULL, env=_base_env(Path("/nonexistent")), cwd="/")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{agent} --version failed: {exc}"
        if out.returncode != 0 or pinned[agent] not in out.stdout:
            return (f"{agent} --version says {out.stdout.strip()[:120]!r} (rc {out.returncode}), pinned {pinned[agent]}: "
                    "reinstall with `npm ci --prefix agents`" + (f"; stderr: {out.stderr.strip()[:200]}" if out.stderr else ""))
    return None


# ------------------------------------------------------------------ configuration (README = test)
def claude_settings(base_url: str = README_BASE, key: str = README_KEY, *, model: str | None = MODEL,
                    key_var: str = "ANTHROPIC_AUTH_TOKEN", test: bool = False) -> dict[str, Any]:
    """``~/.claude/settings.json``. ``model=None``: leave Claude Code's own model names (claude-*),
    which the proxy maps onto chutes-models through ``model_group_alias``. ``key_var``:
    ``ANTHROPIC_AUTH_TOKEN`` is sent as ``Authorization: Bearer`` (no "use this API key?"
    dialog), ``ANTHROPIC_API_KEY`` as ``x-api-key``."""
    env = {
        "ANTHROPIC_BASE_URL": base_url,  # without /v1: Claude Code appends /v1/messages
        key_var: key,
    }
    if model is not None:
        env.update({
            "ANTHROPIC_MODEL": model,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
            "CLAUDE_CODE_SUBAGENT_MODEL": model,
            "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(CONTEXT_TOKENS),
        })
    env.update({
        # prompt + max_tokens must fit the chute's context window; for its own model names
        # Claude Code asks for 128000 output tokens, beyond a 131072-token chute
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(OUTPUT_TOKENS),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, feature flags, update checks
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    })
    if test:
        env["CLAUDE_CODE_MAX_RETRIES"] = "1"  # default 10 retries with backoff: minutes on an error
    return {"env": env}


def codex_config(base_url: str = README_BASE, *, model: str = MODEL, test: bool = False) -> str:
    """``~/.codex/config.toml``."""
    retries = "request_max_retries = 1\nstream_max_retries = 1\n" if test else ""
    return f'''model = "{model}"
model_provider = "chutes-lb"
web_search = "disabled"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[agents]
enabled = false

[features]
plugins = false
goals = false

[model_providers.chutes-lb]
name = "chutes-lb"
base_url = "{base_url}/v1"
env_key = "{KEY_ENV}"
wire_api = "responses"
{retries}'''


def opencode_config(base_url: str = README_BASE, *, model: str = MODEL) -> dict[str, Any]:
    """``~/.config/opencode/opencode.json``."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "chutes-lb": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "chutes-lb",
                "options": {"baseURL": f"{base_url}/v1", "apiKey": "{env:" + KEY_ENV + "}"},
                "models": {model: {"name": model, "limit": {"context": CONTEXT_TOKENS, "output": OUTPUT_TOKENS}}},
            }
        },
        "model": f"chutes-lb/{model}",
        "small_model": f"chutes-lb/{model}",
        "autoupdate": False,
        "share": "disabled",
    }


OPENCODE_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",  # else it fetches the models.dev catalogue at start
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
}


# ------------------------------------------------------------------ what the tests ask
API = {"claude": "messages", "codex": "responses", "opencode": "chat"}  # the proxy's metrics label
SECRET = "PERIWINKLE-7731"  # only in the file the tool turn reads


def tool_directive(agent: str, path: Path) -> str:
    """The simulator directive that makes the model call the agent's own file-reading tool
    (the names and arguments each pinned version offers: notes/agents.md)."""
    return {
        "claude": f'sim:call Read {{"file_path": "{path}"}}',
        "codex": f'sim:call exec_command {{"cmd": "cat {path}"}}',
        "opencode": f'sim:call read {{"filePath": "{path}"}}',
    }[agent]


# ------------------------------------------------------------------ tripwire for outbound traffic
class Tripwire:
    """A loopback HTTP proxy that refuses everything and records what was asked (CONNECT host:port
    or absolute URL). Agents get it as HTTPS_PROXY/HTTP_PROXY; loopback is in NO_PROXY."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                seen.append(f"{self.command} {self.path}")
                self.send_response(403, "tripwire: no network in the agent tests")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            do_CONNECT = do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="tripwire", daemon=True)

    def __enter__(self) -> "Tripwire":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ one run
@dataclass
class AgentRun:
    agent: str
    argv: list[str]
    rc: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    home: Path
    outbound: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"{self.agent} rc={self.rc} in {self.seconds:.1f}s\n--- stdout:\n{self.stdout[-3000:]}\n"
                f"--- stderr:\n{self.stderr[-3000:]}\n--- outbound attempts: {self.outbound}")


def _base_env(home: Path) -> dict[str, str]:
    """Nothing inherited: no proxy settings, keys, npm config or XDG dirs of the caller."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TERM": "dumb", "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"), "XDG_CACHE_HOME": str(home / ".cache"),
    }


def _prepare(agent: str, prompt: str, home: Path, base_url: str, key: str, claude_model: str | None,
             claude_key_var: str) -> tuple[list[str], dict[str, str]]:
    env = _base_env(home)
    binary = str(BINARIES[agent])
    if agent == "claude":
        cfg = home / ".claude"
        cfg.mkdir(parents=True)
        (cfg / "settings.json").write_text(json.dumps(claude_settings(base_url, key, model=claude_model, key_var=claude_key_var, test=True), indent=2))
        env["CLAUDE_CONFIG_DIR"] = str(cfg)
        return [binary, "-p", prompt, "--output-format", "text", "--allowedTools", "Read"], env
    if agent == "codex":
        cfg = home / ".codex"
        cfg.mkdir(parents=True)
        (cfg / "config.toml").write_text(codex_config(base_url, test=True))
        env.update({"CODEX_HOME": str(cfg), KEY_ENV: key})
        return [binary, "exec", "--skip-git-repo-check", "--ephemeral", "--sandbox", "read-only", "--color", "never", prompt], env
    if agent == "opencode":
        cfg = home / ".config" / "opencode"
        (cfg / "node_modules").mkdir(parents=True)
        # Mark the config dir's one dependency (@opencode-ai/plugin, the SDK for a user's own
        # plugins) as installed: else OpenCode npm-installs it from the registry on every start.
        (cfg / "package.json").write_text('{"dependencies": {"@opencode-ai/plugin": "*"}}')
        (cfg / "package-lock.json").write_text(json.dumps({"lockfileVersion": 3, "requires": True, "packages": {
            "": {"dependencies": {"@opencode-ai/plugin": "*"}}}}))
        (cfg / "opencode.json").write_text(json.dumps(opencode_config(base_url), indent=2))
        env.update(OPENCODE_ENV)
        env[KEY_ENV] = key
        # `opencode run` quotes every argument that contains a space and escapes its quotes (the
        # model sees "\"say hi\"" for "say hi"): one word per argument reaches it verbatim.
        return [binary, "run", *prompt.split()], env
    raise ValueError(agent)


def run_agent(agent: str, prompt: str, *, base_url: str, key: str, home: Path, workdir: Path,
              timeout: float = 90.0, claude_model: str | None = MODEL, claude_key_var: str = "ANTHROPIC_AUTH_TOKEN") -> AgentRun:
    """Run one agent once on ``prompt`` in ``workdir`` with a fresh ``home``; never raises on
    the agent's failure (the caller asserts on :class:`AgentRun`)."""
    home.mkdir(parents=True)
    argv, env = _prepare(agent, prompt, home, base_url, key, claude_model, claude_key_var)
    tmpdir = home / "tmp"
    tmpdir.mkdir()
    env["TMPDIR"] = str(tmpdir)
    with Tripwire() as wire:
        env.update({"HTTPS_PROXY": wire.url, "HTTP_PROXY": wire.url, "https_proxy": wire.url, "http_proxy": wire.url,
                    "ALL_PROXY": wire.url, "NO_PROXY": "127.0.0.1,localhost,::1", "no_proxy": "127.0.0.1,localhost,::1"})
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            # the agent and whatever it started (Codex's sandboxed shell, OpenCode's workers)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if rc is None:
            out, err = proc.communicate(timeout=10)
            err += f"\n[agent_runner] killed after {timeout:.0f}s"
        seconds = time.monotonic() - start
        outbound = list(wire.seen)
    return AgentRun(agent, argv, rc, out, err, seconds, home, outbound)
