"""PNG plots of DES runs (matplotlib, Agg backend; imported only when ``--out`` is given)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from benchmarks.des.sessions import SessionResult
    from benchmarks.des.sim import SimResult

__all__ = ["plots", "session_plots"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plots(results: "dict[tuple[str, str], SimResult]", out: Path, tag: str) -> list[str]:
    plt = _plt()
    files = []
    for mode in ("queue", "reject"):
        rs = {s: r for (m, s), r in results.items() if m == mode and len(r.latencies)}
        if not rs:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        for s, r in rs.items():
            x = np.sort(r.latencies)
            y = np.arange(1, len(x) + 1) / len(x)
            idx = np.unique(np.geomspace(1, len(x), 2000).astype(int) - 1)
            ax.plot(x[idx], y[idx], label=s)
        ax.set_xscale("log")
        ax.set_xlabel("sojourn time (mean service times)")
        ax.set_ylabel("CDF")
        ax.set_title(f"scenario {tag}, {mode} mode: latency CDF")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        f = f"latency-cdf-{tag}-{mode}.png"
        fig.savefig(out / f, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(f)
    for s in ("headroom", "least-utilization"):
        r = results.get(("reject", s)) or results.get(("queue", s))
        if r is None or not len(r.share_timeline):
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        tl = r.share_timeline / r.cap_share[None, :]
        n = tl.shape[1]
        show = range(n) if n <= 10 else np.argsort(r.cap_share)[:: max(1, n // 8)]
        for i in show:
            ax.plot(tl[:, i], label=f"chute {i} (cap share {r.cap_share[i]:.3f})")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("time bin")
        ax.set_ylabel("load share / capacity share")
        ax.set_title(f"scenario {tag}, {r.mode} mode, {s}: load share per chute over time")
        ax.legend(fontsize=6)
        f = f"load-share-{tag}-{s}.png"
        fig.savefig(out / f, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(f)
    return files


def _cdf(ax, values: np.ndarray, label: str, style: str = "-", color: str | None = None) -> None:
    if not len(values):
        return
    x = np.sort(values)
    y = np.arange(1, len(x) + 1) / len(x)
    idx = np.unique(np.geomspace(1, len(x), 2000).astype(int) - 1)
    ax.plot(x[idx], y[idx], style, color=color, label=label)


def session_plots(runs: "dict[str, SessionResult]", out: Path, tag: str, share_of: tuple[str, ...] = ()) -> list[str]:
    """A TTFT CDF by turn type (first turns dashed, follow-ups solid) for every strategy, and the load
    share per chute over time for the strategies in ``share_of``. Times in seconds."""
    plt = _plt()
    files = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, r) in enumerate(runs.items()):
        color = f"C{i}"
        _cdf(ax, r.ttft_follow * r.seconds_per_unit, f"{label}: follow-up turns", "-", color)
        _cdf(ax, r.ttft_first * r.seconds_per_unit, f"{label}: first turns", "--", color)
    ax.set_xscale("log")
    ax.set_xlabel("time to first token (s)")
    ax.set_ylabel("CDF")
    ax.set_title(f"sessions {tag}: TTFT by turn type")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    f = f"ttft-cdf-{tag}.png"
    fig.savefig(out / f, dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.append(f)
    for label in share_of:
        r = runs.get(label)
        if r is None or not len(r.share_timeline):
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        tl = r.share_timeline / r.cap_share[None, :]
        for i in range(tl.shape[1]):
            ax.plot(tl[:, i], label=f"chute {i} (cap share {r.cap_share[i]:.3f})")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("time bin")
        ax.set_ylabel("share of attempts / capacity share")
        ax.set_title(f"sessions {tag}, {label}: load share per chute over time")
        ax.legend(fontsize=6)
        f = f"load-share-{tag}-{label.replace('+', '-').replace(':', '-')}.png"
        fig.savefig(out / f, dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(f)
    return files
