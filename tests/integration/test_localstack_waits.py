"""A process that does not come up says why (chutes_lb.localstack.wait_http): its exit reason and
log tail, a note when its log is empty, and a restart loop of its children caught early instead of
a bare timeout (what stock LiteLLM's workers did under uvicorn's 5 s supervisor ping)."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from chutes_lb.localstack import RESTART_LOOP_CHILDREN, ManagedProcess, child_pids, free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _url() -> str:
    return f"http://127.0.0.1:{free_port()}/health"  # nothing will listen there


def test_an_exit_is_reported_with_its_code_and_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess("dies", [sys.executable, "-c", "print('cannot bind: address in use', flush=True); raise SystemExit(3)"],
                          log_path=tmp_path / "dies.log").start()
    with pytest.raises(RuntimeError, match=r"dies exited with 3 while waiting .*\n.*cannot bind: address in use"):
        wait_http(_url(), 20, proc=proc)


def test_a_kill_by_signal_and_an_empty_log_are_named(tmp_path: Path) -> None:
    proc = ManagedProcess("killed", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "killed.log").start()
    proc.signal(signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"killed was killed by SIGKILL .*\n\(its log .*killed\.log is empty\)"):
        wait_http(_url(), 20, proc=proc)


def test_a_restart_loop_of_children_fails_early(tmp_path: Path) -> None:
    # a supervisor that replaces a child every 0.2 s and never serves
    loop = ("import subprocess, sys, time\n"
            "while True:\n"
            "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.2)']).wait()\n")
    proc = ManagedProcess("looping", [sys.executable, "-c", loop], log_path=tmp_path / "looping.log").start()
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=rf"looping: (\d+) of its child processes started and died .*restart loop"):
            wait_http(_url(), 45, proc=proc)
        assert time.monotonic() - t0 < 30  # well before the deadline
    finally:
        proc.stop()


def test_child_pids_lists_live_children(tmp_path: Path) -> None:
    code = "import subprocess, sys, time; [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']) for _ in range(2)]; time.sleep(30)"
    proc = ManagedProcess("parent", [sys.executable, "-c", code], log_path=tmp_path / "parent.log").start()
    try:
        deadline = time.monotonic() + 10
        while len(child_pids(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(child_pids(proc.pid)) == 2
        assert RESTART_LOOP_CHILDREN > 2  # a supervisor's ordinary children are never a loop
    finally:
        proc.stop()
