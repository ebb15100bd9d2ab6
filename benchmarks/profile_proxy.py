#!/usr/bin/env python
"""Where a proxy worker's CPU goes under load: py-spy samples one worker while wrk loads one path.

Starts the same set-up as ``overhead.py`` / ``api_cost.py`` (Redis, zero-latency simulator on
``simulator/fleet-bench.yaml``, poller, our proxy with 1 worker at its default LOG_LEVEL info;
or ``--stock``: plain LiteLLM with LITELLM_LOG=ERROR, chat only), warms it up, then records the
worker with ``py-spy record --gil`` (it pauses the worker for each sample: with
``--nonblocking`` a third of the stacks came back torn, without their root frames; only the
thread that holds the GIL is sampled, so a pool thread blocked in ``queue.get`` is not counted as
busy, which py-spy's idle detection gets wrong) while wrk sends the chosen API / prompt size
/ mode (the payloads of ``api_cost.py``) for ``--seconds``.

Every percentage below is a share of the samples that held the GIL, i.e. of the worker's Python
CPU (C code that releases the GIL, e.g. in socket calls, is not in it); ms / request = that share
x the worker's measured CPU ms per request (all of its CPU, so an upper estimate):

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
    .venv/bin/python benchmarks/profile_proxy.py --diff benchmarks/out/profile/ours-chat-short-plain.json \
        benchmarks/out/profile/ours-responses-short-plain.json      # where B spends more per request than A
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
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api_cost import PATHS, conversation, payload  # noqa: E402
from common import (BENCH_FLEET, ROOT, MASTER_KEY, bench_fleet_chutes, litellm_config, load_average, log, machine_info, md_table, process_cpu_seconds,  # noqa: E402
                    start_all, wrk_post)

from chutes_lb.devstack import PollerProcess, ProxyProcess  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

#: layers of a request, by file prefix; a sample is charged to the layer of its innermost frame that
#: matches one (so a translation layer that pulls chunks from LiteLLM's chat stream wrapper is not
#: charged for the wrapper's own work)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("translation (Messages / Responses <-> chat)", ("chutes_lb/proxy/messages.py", "chutes_lb/proxy/responses.py",
                                                     "litellm/llms/anthropic/pass_through/", "litellm/responses/")),
    ("LiteLLM chat stream wrapper", ("litellm/litellm_core_utils/streaming_handler.py", "litellm/litellm_core_utils/streaming_chunk_builder_utils.py")),
    ("LiteLLM logging and callbacks", ("litellm/litellm_core_utils/litellm_logging.py", "litellm/litellm_core_utils/logging_worker.py",
                                       "litellm/integrations/", "litellm_enterprise/", "litellm/cost_calculator.py")),
    ("our routing hook (chutes_lb.routing)", ("chutes_lb/routing/",)),
    ("our routes, gateway and middleware (chutes_lb.proxy)", ("chutes_lb/proxy/",)),
    ("LiteLLM router", ("litellm/router.py", "litellm/router_utils/", "litellm/router_strategy/")),
    ("LiteLLM completion and OpenAI client", ("litellm/", "openai/")),
    ("HTTP client (aiohttp, httpx)", ("aiohttp/", "httpx/", "httpcore/")),
    ("uvicorn / ASGI / event loop", ("uvicorn/", "starlette/", "fastapi/", "asyncio/", "uvloop/", "chutes_lb/")),
]
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


def layer_of(names: list[str]) -> str:
    """The :data:`LAYERS` name of the innermost frame (of ``names``, root first) that matches one."""
    for n in reversed(names):
        for layer, prefixes in LAYERS:
            if n.startswith(prefixes):
                return layer
    return "other (no frame of a known layer)"


def summarise(samples: Iterable[tuple[list[str], int]], top: int = 25) -> dict[str, list[tuple[str, float]]]:
    samples = list(samples)
    total = sum(c for _, c in samples) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for stack, count in samples:
        names = [frame_name(f) for f in stack]
        if not names:
            continue
        self_c[names[-1]] += count
        pkg[package_of(names[-1])] += count
        layers[layer_of(names)] += count
        for n in set(names):
            incl[n] += count
        inner = next((n for n in reversed(names) if n.startswith("chutes_lb/")), None)
        ours[inner or "(no chutes_lb frame)"] += count

    def pct(c: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in c.most_common(n)]

    return {"self": pct(self_c, top), "inclusive": pct(incl, top), "package": pct(pkg, top), "ours": pct(ours, top),
            "layer": pct(layers, top),
            "samples": [("total", float(total))]}


def diff(a_path: Path, b_path: Path, top: int = 20) -> str:
    """Per function, B's ms / request minus A's (inclusive, self, and charged to our innermost
    frame): where one path spends more than another (e.g. a translated API against chat)."""
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    lines = [f"# {b_path.stem} minus {a_path.stem}", "",
             f"CPU ms per request: {a['cpu_ms_per_request']:.2f} ({a_path.stem}) and {b['cpu_ms_per_request']:.2f} ({b_path.stem}), "
             f"difference {b['cpu_ms_per_request'] - a['cpu_ms_per_request']:+.2f}. Each row: share x that profile's CPU ms per request.", ""]
    for key, title in (("layer", "by layer"), ("ours", "charged to the innermost chutes_lb frame"), ("inclusive", "inclusive"),
                       ("self", "self")):
        ma = {k: v * a["cpu_ms_per_request"] / 100 for k, v in a[key]}
        mb = {k: v * b["cpu_ms_per_request"] / 100 for k, v in b[key]}
        rows = sorted(set(ma) | set(mb), key=lambda k: -abs(mb.get(k, 0.0) - ma.get(k, 0.0)))[:top]
        lines += [f"## {title}", "", md_table(["where", a_path.stem, b_path.stem, "difference (ms / request)"],
                                                [[f"`{k}`", f"{ma.get(k, 0.0):.3f}", f"{mb.get(k, 0.0):.3f}", f"{mb.get(k, 0.0) - ma.get(k, 0.0):+.3f}"]
                                                 for k in rows]), ""]
    return "\n".join(lines)


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
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "profile"))
    ap.add_argument("--diff", nargs=2, metavar=("A_JSON", "B_JSON"), help="only compare two earlier profiles (B minus A)")
    args = ap.parse_args(argv)
    if args.diff:
        print(diff(Path(args.diff[0]), Path(args.diff[1]), args.top))
        return 0
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
    chutes = bench_fleet_chutes()
    with ExitStack() as stack:
        redis = RedisServer().start()
        stack.callback(redis.stop)
        sim = SimulatorProcess(BENCH_FLEET, time_scale=1e-6, refresh_seconds=5, env={"LOG_LEVEL": "warning"})
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
        cpu0, t0 = process_cpu_seconds(proc.process.pid).get(pid, 0.0), time.monotonic()
        spy_run = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate),
                                  "--format", "raw", "--output", str(raw_path), "--full-filenames", "--gil"],
                                 capture_output=True, text=True, timeout=args.seconds + 60)
        worker_cores = (process_cpu_seconds(proc.process.pid).get(pid, 0.0) - cpu0) / max(time.monotonic() - t0, 1e-9)
        loader.join(timeout=args.seconds + 60)
        if spy_run.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed ({spy_run.returncode}): {spy_run.stderr[-2000:]}")
    summary = summarise(parse_raw(raw_path.read_text()), top=100_000)  # everything in the JSON, the top in the report
    total = int(summary.pop("samples")[0][1])
    cpu_ms = 1000.0 * worker_cores / load["rps"] if load.get("rps") else float("nan")
    lines = [f"# Profile of one proxy worker: {name} ({info['date']})", "",
             f"{'Stock LiteLLM (LITELLM_LOG=ERROR)' if args.stock else 'Our proxy (LOG_LEVEL info)'}, 1 worker, pid {pid}; "
             f"wrk {args.connections} connections, {load.get('rps', float('nan')):.1f} req/s; py-spy {args.rate} Hz for "
             f"{args.seconds:g} s, {total} samples holding the GIL; the worker used {worker_cores:.2f} cores meanwhile, "
             f"**{cpu_ms:.2f} CPU ms per request**. Machine: {info['cores']} cores, load average "
             f"{info['load_average_start']} at start, {load_average()} at end.", "",
             "Percentages are shares of the samples holding the GIL (the worker's Python CPU); ms / request = share x the "
             "worker's CPU ms per request.", ""]
    titles = {"layer": "By layer (innermost frame of a known layer, see LAYERS)", "package": "Self time by package", "ours": "Charged to the innermost chutes_lb frame (our function + what it called)",
              "self": "Self time (top of stack)", "inclusive": "Inclusive time (anywhere on the stack)"}
    for key in ("layer", "package", "ours", "self", "inclusive"):
        lines += [f"## {titles[key]}", "", md_table(["where", "% of CPU", "ms / request"],
                                                    [[f"`{k}`", f"{v:.1f}", f"{v * cpu_ms / 100:.3f}"] for k, v in summary[key][:args.top]]), ""]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    (out_dir / f"{name}.json").write_text(json.dumps({"info": info, "args": vars(args), "pid": pid, "load": load,
                                                      "worker_cores": worker_cores, "cpu_ms_per_request": cpu_ms,
                                                      "samples": total, **summary}, indent=1))
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
