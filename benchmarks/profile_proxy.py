#!/usr/bin/env python
"""Where a proxy worker's CPU goes under load: py-spy samples one worker while wrk loads one path.

Starts the same set-up as ``overhead.py`` / ``api_cost.py`` (Redis, zero-latency simulator on
``simulator/fleet-bench.yaml``, poller, our proxy with 1 worker at its default LOG_LEVEL info;
or ``--stock``: plain LiteLLM with LITELLM_LOG=ERROR, chat only), warms it up, then records the
worker with ``py-spy record --nonblocking`` (sampling without pausing it) while wrk sends the
chosen API / prompt size / mode (the payloads of ``api_cost.py``) for ``--seconds``.

py-spy leaves idle samples out, so every percentage below is a share of the worker's CPU:

- **self**: the function on top of the stack (where the CPU was spent);
- **inclusive**: the function anywhere on the stack (what it and its callees cost);
- **by package**: self time by the top-level package of the file (``chutes_lb.proxy``,
  ``litellm.litellm_core_utils``, ``pydantic``, stdlib ``json``, ...);
- **under our code**: each sample charged to the innermost frame of ``chutes_lb`` on its stack
  (our function and everything it called that is not ours), or to "no chutes_lb frame" (LiteLLM
  or uvicorn work not called from our code).

py-spy is a profiling tool, not a dependency of the project: ``uv pip install py-spy`` into the
venv (it ships as a binary wheel). Attaching needs ptrace (root or CAP_SYS_PTRACE).

    .venv/bin/python benchmarks/profile_proxy.py --api messages --size long --mode stream
    .venv/bin/python benchmarks/profile_proxy.py --api chat --size short --mode plain --stock
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_cost import PATHS, conversation, fleet_chutes, payload  # noqa: E402
from common import (ROOT, MASTER_KEY, litellm_config, load_average, log, machine_info, md_table, process_cpu_seconds,  # noqa: E402
                    start_all, wrk_post)

from chutes_lb.devstack import PollerProcess, ProxyProcess  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

FLEET_PATH = ROOT / "simulator" / "fleet-bench.yaml"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


# ---------------------------------------------------------------------------- stacks
def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: ``frame;frame;...;leaf count`` per line, root first."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def short_file(path: str) -> str:
    """``.../site-packages/litellm/router.py`` -> ``litellm/router.py``; ``.../src/chutes_lb/x.py`` -> ``chutes_lb/x.py``."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    return path


def frame_name(frame: str) -> str:
    """``file:function`` of a py-spy frame (line numbers dropped, so a function is one row)."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    return f"{short_file(m.group('file'))}:{m.group('func')}"


def package_of(name: str) -> str:
    """``chutes_lb/proxy/gateway.py:call`` -> ``chutes_lb.proxy``; ``litellm/main.py:x`` -> ``litellm``;
    ``litellm/litellm_core_utils/a.py:x`` -> ``litellm.litellm_core_utils``; stdlib ``json/decoder.py`` -> ``json``."""
    path = name.split(":", 1)[0]
    parts = path.split("/")
    if len(parts) >= 3 and parts[0] in ("chutes_lb", "litellm"):
        return f"{parts[0]}.{parts[1]}"
    if parts[0].endswith(".py"):
        return parts[0][:-3]
    return parts[0]


def summarise(samples: Iterable[tuple[list[str], int]], top: int = 25) -> dict[str, list[tuple[str, float]]]:
    samples = list(samples)
    total = sum(c for _, c in samples) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for stack, count in samples:
        names = [frame_name(f) for f in stack]
        if not names:
            continue
        self_c[names[-1]] += count
        pkg[package_of(names[-1])] += count
        for n in set(names):
            incl[n] += count
        inner = next((n for n in reversed(names) if n.startswith("chutes_lb/")), None)
        ours[inner or "(no chutes_lb frame)"] += count

    def pct(c: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in c.most_common(n)]

    return {"self": pct(self_c, top), "inclusive": pct(incl, top), "package": pct(pkg, top), "ours": pct(ours, top),
            "samples": [("total", float(total))]}


# ---------------------------------------------------------------------------- run
def busiest_worker(pgid: int, url: str, body: bytes, workdir: Path) -> int:
    """The pid that did most of the work in a short burst (the worker itself with 1 worker)."""
    before = process_cpu_seconds(pgid)
    wrk_post(url, body, 3, 8, workdir, name="warm")
    after = process_cpu_seconds(pgid)
    return max(after, key=lambda p: after[p] - before.get(p, 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", choices=sorted(PATHS), default="chat")
    ap.add_argument("--size", choices=("short", "long"), default="short")
    ap.add_argument("--mode", choices=("plain", "stream"), default="plain")
    ap.add_argument("--long-kb", type=float, default=50.0)
    ap.add_argument("--stock", action="store_true", help="profile stock LiteLLM (LITELLM_LOG=ERROR) instead of ours (chat only)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of sampling under load (default 20)")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "profile"))
    args = ap.parse_args(argv)
    if args.stock and args.api != "chat":
        ap.error("--stock profiles chat only (stock LiteLLM forwards the other APIs to the upstream's own routes)")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        ap.error("py-spy is required: .venv/bin/uv pip install --python .venv/bin/python py-spy")
    if not shutil.which("wrk"):
        ap.error("wrk is required (apt-get install wrk)")
    info = machine_info()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{'stock' if args.stock else 'ours'}-{args.api}-{args.size}-{args.mode}"
    workdir = Path(tempfile.mkdtemp(prefix="profile-"))
    body = json.dumps(payload(args.api, conversation(args.size, args.long_kb), args.mode == "stream")).encode()
    chutes = fleet_chutes()
    with ExitStack() as stack:
        redis = RedisServer().start()
        stack.callback(redis.stop)
        sim = SimulatorProcess(FLEET_PATH, time_scale=1e-6, refresh_seconds=5, env={"LOG_LEVEL": "warning"})
        start_all(stack, [sim])
        if args.stock:
            from overhead import StockLiteLLM

            proc = StockLiteLLM(litellm_config(workdir / "stock", chutes, with_hook=False), sim.openai_base, 1,
                                env={"LITELLM_LOG": "ERROR"}, log_dir=str(workdir / "stock"))
            log("starting stock LiteLLM (1 worker, LITELLM_LOG=ERROR)")
            start_all(stack, [proc])
        else:
            cfg = litellm_config(workdir / "ours", chutes, with_hook=True)
            poller = PollerProcess(sim.base_url, redis.url, "profile", config=cfg, interval=1.0, env={"LOG_LEVEL": "warning"},
                                   log_dir=str(workdir / "ours"))
            proc = ProxyProcess(sim.openai_base, redis.url, MASTER_KEY, "profile", config=cfg, workers=1, strategy="headroom",
                                env={"LOG_LEVEL": "info"}, log_dir=str(workdir / "ours"))
            log("starting poller and our proxy (1 worker, LOG_LEVEL info)")
            start_all(stack, [poller, proc])
        url = proc.base_url + PATHS[args.api]
        pid = busiest_worker(proc.process.pid, url, body, workdir)
        raw_path = out_dir / f"{name}.raw.txt"
        log(f"profiling pid {pid} for {args.seconds:g} s under load ({args.api}/{args.size}/{args.mode})")
        load: dict[str, float] = {}
        loader = threading.Thread(target=lambda: load.update(wrk_post(url, body, args.seconds + 4, args.connections, workdir, name="load")))
        loader.start()
        threading.Event().wait(1.0)  # wrk's connections are open and busy
        spy_run = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate),
                                  "--format", "raw", "--output", str(raw_path), "--nonblocking"],
                                 capture_output=True, text=True, timeout=args.seconds + 60)
        loader.join(timeout=args.seconds + 60)
        if spy_run.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed ({spy_run.returncode}): {spy_run.stderr[-2000:]}")
    summary = summarise(parse_raw(raw_path.read_text()), args.top)
    total = int(summary.pop("samples")[0][1])
    lines = [f"# Profile of one proxy worker: {name} ({info['date']})", "",
             f"{'Stock LiteLLM (LITELLM_LOG=ERROR)' if args.stock else 'Our proxy (LOG_LEVEL info)'}, 1 worker, pid {pid}; "
             f"wrk {args.connections} connections, {load.get('rps', float('nan')):.1f} req/s; py-spy {args.rate} Hz for "
             f"{args.seconds:g} s, {total} non-idle samples. Machine: {info['cores']} cores, load average "
             f"{info['load_average_start']} at start, {load_average()} at end.", "",
             "Percentages are shares of the worker's CPU (idle samples left out).", ""]
    titles = {"package": "Self time by package", "ours": "Charged to the innermost chutes_lb frame (our function + what it called)",
              "self": "Self time (top of stack)", "inclusive": "Inclusive time (anywhere on the stack)"}
    for key in ("package", "ours", "self", "inclusive"):
        lines += [f"## {titles[key]}", "", md_table(["where", "% of CPU"], [[f"`{k}`", f"{v:.1f}"] for k, v in summary[key]]), ""]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    (out_dir / f"{name}.json").write_text(json.dumps({"info": info, "args": vars(args), "pid": pid, "load": load,
                                                      "samples": total, **summary}, indent=1))
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
