#!/usr/bin/env python
"""What the coding agents' APIs cost the proxy: CPU ms per request of ``/v1/messages`` (Anthropic)
and ``/v1/responses`` (OpenAI Responses) against ``/v1/chat/completions``, on the same
conversation expressed in each API's own shape (issue 12, target: at most 1.15x chat).

Set-up: Redis, poller and our proxy (``python -m chutes_lb.proxy``, **1 worker**, the default
LOG_LEVEL info, strategy headroom) in front of a zero-latency simulator (SIM_TIME_SCALE 1e-6,
``simulator/fleet-bench.yaml``: 4 chutes x 1,024 slots, never full). Load: wrk, 1 thread,
``--connections`` keep-alive connections, ``--duration`` s per measurement, max_tokens 16.

Cells: 3 APIs (and chat-parts, below) x 2 prompt sizes (short: a few words per turn; long: ~50 KB of code in the
conversation) x plain and streamed. The conversation is the same everywhere: a system prompt,
user, assistant, user. Chat sends strings; Messages sends text blocks (as Claude Code does) and
``system`` as a block; Responses sends ``instructions`` and message items with
``input_text``/``output_text`` parts (as Codex CLI does). Streams of every API ask for usage
(chat with ``stream_options.include_usage``, which the translated APIs set themselves), so the
upstream traffic is the same and the difference is the translation. ``chat-parts`` is chat with
each turn's content as a list of text parts, the shape both translations hand to LiteLLM (it
shows how much of their cost is that shape, measured, not the translation code).

Rounds are interleaved: in each round every (size, mode) block runs its three APIs back to back
(the order rotates from round to round), so a round's ``messages / chat`` ratio is paired.
"CPU ms / request" = CPU of the proxy's process group (``/proc``) during the measurement / the
answers wrk read to their end. Each ratio is reported with a 95% bootstrap interval over rounds
(``common.round_interval`` over ``benchmarks/stats.py``, mean of the paired per-round ratios); the verdict uses the interval's
upper bound (PASS only when the whole interval is at most 1.15x). Every answer is checked: one
request per cell is read and its shape checked before measuring, and after each measurement the
proxy's own ``chutes_lb_requests_total`` must show no outcome but ``ok`` (and ``cancelled`` for
the few requests wrk cuts when it stops).

    .venv/bin/python benchmarks/api_cost.py                   # ~15 min on 2 cores
    .venv/bin/python benchmarks/api_cost.py --rounds 3 --duration 3 --sizes long
    .venv/bin/python benchmarks/api_cost.py --smoke           # ~1 min, used by the tests
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (BENCH_FLEET, ROOT, MASTER_KEY, CpuMeter, bench_fleet_chutes, fmt, interval, interval_text,  # noqa: E402
                    litellm_config, load_average, log, machine_info, md_table, ratio, round_interval, start_all,
                    wrk_post)

from chutes_lb.devstack import PollerProcess, ProxyProcess, metric_value  # noqa: E402
from chutes_lb.localstack import RedisServer  # noqa: E402
from chutes_lb.simulator.launch import SimulatorProcess  # noqa: E402

TARGET = 1.15  # translated API / chat, CPU per request, upper bound of the interval
APIS = ("chat", "messages", "responses", "chat-parts")
TRANSLATED = ("messages", "responses")  # the verdicts; chat-parts explains them
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses", "chat-parts": "/v1/chat/completions"}
MODEL = "chutes-models"
MAX_TOKENS = 16
SYSTEM = "You are a coding assistant working in the user's repository. Answer briefly and precisely."


# ---------------------------------------------------------------------------- payloads
def _code(n_chars: int, seed: int) -> str:
    """Deterministic Python-looking text of about ``n_chars`` characters (a file an agent read)."""
    lines, size, i = [], 0, 0
    while size < n_chars:
        line = (f"def handler_{seed}_{i}(request, retries={i % 7}):\n"
                f"    \"\"\"Route request {i} of module {seed} to the least loaded chute.\"\"\"\n"
                f"    return dispatch(request, key='{(seed * 7919 + i * 104729) % 1_000_003:07d}', timeout={i % 30 + 1})\n\n")
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)


def conversation(size: str, long_kb: float) -> list[tuple[str, str]]:
    """(role, text) turns after the system prompt: user, assistant, user."""
    if size == "short":
        return [("user", "What does parse_config do?"), ("assistant", "It reads the YAML file and validates it."),
                ("user", "Say hi")]
    half = int(long_kb * 1000 / 2)
    return [("user", f"Here is src/router.py:\n```python\n{_code(half, 1)}```\nWhat does it do?"),
            ("assistant", "It dispatches each request to a handler with a per-module key and a timeout."),
            ("user", f"And src/handlers.py:\n```python\n{_code(half, 2)}```\nSummarise both files in one line.")]


def payload(api: str, turns: list[tuple[str, str]], stream: bool) -> dict[str, Any]:
    """The conversation in ``api``'s own shape."""
    if api in ("chat", "chat-parts"):
        def content(t: str) -> Any:
            return t if api == "chat" else [{"type": "text", "text": t}]
        body: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS,
                                "messages": [{"role": "system", "content": SYSTEM}, *({"role": r, "content": content(t)} for r, t in turns)]}
        if stream:
            body["stream_options"] = {"include_usage": True}
    elif api == "messages":
        body = {"model": MODEL, "max_tokens": MAX_TOKENS, "system": [{"type": "text", "text": SYSTEM}],
                "messages": [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in turns]}
    elif api == "responses":
        body = {"model": MODEL, "max_output_tokens": MAX_TOKENS, "instructions": SYSTEM, "store": False,
                "input": [{"type": "message", "role": r,
                           "content": [{"type": "input_text" if r == "user" else "output_text", "text": t}]} for r, t in turns]}
    else:
        raise ValueError(api)
    if stream:
        body["stream"] = True
    return body


def check_answer(api: str, stream: bool, status: int, text: str) -> str | None:
    """None when the answer is a whole, successful one of ``api``'s shape, else what is wrong."""
    api = "chat" if api == "chat-parts" else api
    if status != 200:
        return f"HTTP {status}: {text[:200]}"
    if stream:
        ends = {"chat": ("data: [DONE]",), "messages": ("event: message_stop",),
                "responses": ("event: response.completed", "event: response.incomplete")}[api]
        bad = {"chat": '"error"', "messages": "event: error", "responses": "response.failed"}[api]
        if bad in text or not any(e in text for e in ends):
            return f"stream without {' or '.join(ends)} or with {bad!r}: ...{text[-300:]}"
        return None
    data = json.loads(text)
    ok = {"chat": lambda d: d.get("choices") and d["choices"][0].get("message") is not None,
          "messages": lambda d: d.get("type") == "message" and isinstance(d.get("content"), list),
          "responses": lambda d: d.get("object") == "response" and d.get("status") in ("completed", "incomplete")}[api](data)
    return None if ok else f"unexpected shape: {text[:300]}"


def fetch(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def outcomes(proxy: ProxyProcess) -> dict[tuple[str, str], float]:
    """(api, outcome) -> chutes_lb_requests_total, from the proxy's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(proxy.metrics_text()):
        for s in family.samples:
            if s.name == "chutes_lb_requests_total":
                key = (s.labels.get("api", ""), s.labels.get("outcome", ""))
                out[key] = out.get(key, 0.0) + s.value
    return out


# ---------------------------------------------------------------------------- run
Cell = tuple[str, str, str]  # api, size, mode


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    chutes = bench_fleet_chutes()
    bodies: dict[Cell, bytes] = {}
    apis = APIS if args.chat_parts else APIS[:3]
    for size in args.sizes:
        turns = conversation(size, args.long_kb)
        for mode in args.modes:
            for api in apis:
                bodies[(api, size, mode)] = json.dumps(payload(api, turns, mode == "stream")).encode()
    rounds: dict[str, list[dict[str, float]]] = {"|".join(c): [] for c in bodies}
    with ExitStack() as stack:
        redis = RedisServer().start()
        stack.callback(redis.stop)
        sim = SimulatorProcess(BENCH_FLEET, time_scale=args.time_scale, refresh_seconds=5, env={"LOG_LEVEL": "warning"})
        start_all(stack, [sim])
        cfg = litellm_config(workdir / "ours", chutes, with_hook=True)
        poller = PollerProcess(sim.base_url, redis.url, "apicost", config=cfg, interval=1.0, env={"LOG_LEVEL": "warning"},
                               log_dir=str(workdir / "ours"))
        proxy = ProxyProcess(sim.openai_base, redis.url, MASTER_KEY, "apicost", config=cfg, workers=1, strategy="headroom",
                             env={"LOG_LEVEL": args.log_level}, log_dir=str(workdir / "ours"))
        log("starting poller and our proxy (1 worker)")
        start_all(stack, [poller, proxy])
        log("checking one answer per cell, then a short warm-up run per cell")
        for cell, body in bodies.items():
            api, _, mode = cell
            status, text = fetch(proxy.base_url + PATHS[api], body)
            problem = check_answer(api, mode == "stream", status, text)
            if problem:
                raise RuntimeError(f"{'/'.join(cell)}: {problem}")
        for cell, body in bodies.items():
            wrk_post(proxy.base_url + PATHS[cell[0]], body, 1, args.connections, workdir, name="warm")
        blocks = [(size, mode) for size in args.sizes for mode in args.modes]
        for r in range(args.rounds):
            log(f"round {r + 1}/{args.rounds}")
            for b in range(len(blocks)):
                size, mode = blocks[(b + r) % len(blocks)]
                for a in range(len(apis)):
                    api = apis[(a + r) % len(apis)]
                    rounds[f"{api}|{size}|{mode}"].append(measure(args, proxy, (api, size, mode), bodies[(api, size, mode)], workdir))
    return {"rounds": rounds}


def measure(args: argparse.Namespace, proxy: ProxyProcess, cell: Cell, body: bytes, workdir: Path) -> dict[str, float]:
    api = cell[0]
    before = outcomes(proxy)
    meter = CpuMeter({"proxy": proxy.process.pid}).start()
    r = wrk_post(proxy.base_url + PATHS[api], body, args.duration, args.connections, workdir, name="load")
    cpu = meter.stop()
    after = outcomes(proxy)
    label = "chat" if api == "chat-parts" else api  # the proxy's api label
    delta = {o: after.get((a, o), 0.0) - before.get((a, o), 0.0) for (a, o) in after if a == label}
    r["proxy_cores"] = cpu["proxy_cores"]
    r["machine_busy"] = cpu["machine_busy_fraction"]
    r["cpu_ms"] = 1000.0 * cpu["proxy_cores"] * cpu["wall_seconds"] / r["requests"] if r["requests"] else float("nan")
    r["ok"] = delta.get("ok", 0.0)
    r["cancelled"] = delta.get("cancelled", 0.0)
    r["failed"] = sum(v for o, v in delta.items() if o not in ("ok", "cancelled"))
    log(f"  {'/'.join(cell):<24} {r['rps']:7.1f} req/s  {r['cpu_ms']:6.2f} CPU ms/req  proxy {r['proxy_cores']:.2f} cores  "
        f"machine busy {r['machine_busy']:.0%}  ok {r['ok']:.0f} cancelled {r['cancelled']:.0f} failed {r['failed']:.0f}")
    if r["requests"] == 0 or r["non_2xx"] or r["failed"]:
        raise RuntimeError(f"{'/'.join(cell)}: {r['non_2xx']:.0f} non-2xx answers and {r['failed']:.0f} failed requests "
                           f"of {r['requests']:.0f} (outcomes {delta})")
    return r


# ---------------------------------------------------------------------------- report
def analyse(args: argparse.Namespace, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    rounds = result["rounds"]
    for size in args.sizes:
        for mode in args.modes:
            chat = rounds[f"chat|{size}|{mode}"]
            row: dict[str, Any] = {"size": size, "mode": mode, "chat_cpu_ms": statistics.median(x["cpu_ms"] for x in chat),
                                   "chat_rps": statistics.median(x["rps"] for x in chat)}
            for api in APIS[1:]:
                if f"{api}|{size}|{mode}" not in rounds:
                    continue
                cells = rounds[f"{api}|{size}|{mode}"]
                paired = [ratio(x["cpu_ms"], c["cpu_ms"]) for x, c in zip(cells, chat)]
                iv = round_interval(paired)
                row[api] = {"cpu_ms": statistics.median(x["cpu_ms"] for x in cells), "rps": statistics.median(x["rps"] for x in cells),
                            "paired": paired, "interval": iv,
                            "verdict": ("PASS" if interval(iv).within(TARGET) else "MISS") if api in TRANSLATED else ""}
            rows.append(row)
    return rows


def write_report(out_dir: Path, info: dict[str, str], args: argparse.Namespace, result: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = analyse(args, result)
    iv = interval_text

    parts = all("chat-parts" in r for r in rows)
    table = [[r["size"], r["mode"], fmt(r["chat_cpu_ms"]), fmt(r["messages"]["cpu_ms"]), fmt(r["responses"]["cpu_ms"]),
              f"{iv(r['messages']['interval'])} {r['messages']['verdict']}", f"{iv(r['responses']['interval'])} {r['responses']['verdict']}",
              *([iv(r["chat-parts"]["interval"])] if parts else []),
              f"{fmt(r['chat_rps'], 0)} / {fmt(r['messages']['rps'], 0)} / {fmt(r['responses']['rps'], 0)}"] for r in rows]
    verdicts = [r[a]["verdict"] for r in rows for a in TRANSLATED]
    overall = "PASS" if all(v == "PASS" for v in verdicts) else "MISS"
    prompt_chars = {s: sum(len(t) for _, t in conversation(s, args.long_kb)) + len(SYSTEM) for s in args.sizes}
    lines = [f"# Translation cost of the agents' APIs ({info['date']})", "",
             f"Machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}; load average at start "
             f"{info['load_average_start']}, at end {info.get('load_average_end', 'n/a')}.", "",
             f"Our proxy, 1 worker, LOG_LEVEL {args.log_level}; zero-latency simulator (SIM_TIME_SCALE {args.time_scale:g}, "
             f"fleet-bench.yaml); wrk 1 thread, {args.connections} connections, {args.duration:g} s per measurement, max_tokens "
             f"{MAX_TOKENS}; {args.rounds} interleaved rounds. Prompt text: "
             + ", ".join(f"{s} {prompt_chars[s]:,} characters" for s in prompt_chars) + ".", "",
             md_table(["prompt", "mode", "chat CPU ms/req", "messages CPU ms/req", "responses CPU ms/req",
                       "messages / chat [95% CI]", "responses / chat [95% CI]", *(["chat-parts / chat [95% CI]"] if parts else []),
                       "req/s chat / messages / responses"], table), "",
             f"CPU ms/req: medians over rounds. Ratios: mean of the paired per-round ratios with a 95% bootstrap interval "
             f"over rounds; verdict PASS when the whole interval is at most {TARGET}x chat. "
             f"**Overall: {overall}** ({verdicts.count('PASS')} of {len(verdicts)} ratios PASS).", ""]
    if parts:
        lines += ["chat-parts: the same chat request with every user and assistant turn as a list of text parts "
                  "(`[{\"type\": \"text\", ...}]`), the shape the two translations hand to LiteLLM: how much of their cost "
                  "is that shape rather than the translation code (no verdict).", ""]
    failed = sum(x["failed"] for v in result["rounds"].values() for x in v)
    cancelled = sum(x["cancelled"] for v in result["rounds"].values() for x in v)
    lines += [f"Every measured answer was a 200; the proxy counted {failed:.0f} failed requests and {cancelled:.0f} cancelled "
              f"ones (requests in flight when wrk stopped).", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps({"info": info, "args": vars(args), "rounds": result["rounds"], "rows": rows,
                                                      "verdict": overall}, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=14, help="interleaved rounds (default 14)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--no-chat-parts", dest="chat_parts", action="store_false", default=True,
                    help="skip the chat-parts cells (chat with content as text parts, the translations' shape)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections (default 8; 1 worker)")
    ap.add_argument("--sizes", default="short,long", help="prompt sizes: short,long (default both)")
    ap.add_argument("--modes", default="plain,stream", help="plain,stream (default both)")
    ap.add_argument("--long-kb", type=float, default=50.0, help="prompt text of the long conversation, KB (default 50)")
    ap.add_argument("--log-level", default="info", help="the proxy's LOG_LEVEL (default info, the project default)")
    ap.add_argument("--time-scale", type=float, default=1e-6, help="SIM_TIME_SCALE (default 1e-6: near-zero latency)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "api-cost"))
    ap.add_argument("--smoke", action="store_true", help="1 round of 1 s per cell (for the tests)")
    ap.add_argument("--report-from", metavar="RESULTS_JSON", help="only re-render report.md from a results.json of an earlier run")
    args = ap.parse_args(argv)
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        report = write_report(Path(args.out), saved["info"], argparse.Namespace(**saved["args"]), {"rounds": saved["rounds"]})
        print(report.read_text())
        return 0
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.sizes) - {"short", "long"} or set(args.modes) - {"plain", "stream"} or not args.sizes or not args.modes:
        ap.error("--sizes takes short,long and --modes plain,stream")
    if args.smoke:
        args.rounds, args.duration, args.connections = 1, 1.0, 4
    import shutil

    if not shutil.which("wrk"):
        ap.error("wrk is required (apt-get install wrk)")
    info = machine_info()
    log(f"machine: {info['cores']} cores, {info['cpu']}, load average {info['load_average_start']}")
    result = run(args, Path(tempfile.mkdtemp(prefix="api-cost-")))
    info["load_average_end"] = load_average()
    report = write_report(Path(args.out), info, args, result)
    log(f"report: {report}")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
