"""PNG plots of a results dictionary (matplotlib, from the `dashboard` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"channeld": "#5794F2", "baseline": "#FF780A"}
LABELS = {"channeld": "channeld", "baseline": "bare dingtalk-stream SDK"}


def _series(steps: list[Mapping[str, Any]], *path: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for step in steps:
        node: Any = step
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            xs.append(float(step["rate"]))
            ys.append(float(node))
    return xs, ys


def plot_load(load: Mapping[str, Any], path: Path) -> None:
    """Scenario a/b: four panels over the offered rate."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        (axes[0][0], ("ack",), "ack latency (ms, log)", True),
        (axes[0][1], ("first_text",), "receipt → first visible text (ms)", False),
        (axes[1][0], ("loop_lag",), "event-loop lag p99 (ms, log)", True),
    ]
    for ax, (family,), title, log in panels:
        for name, steps in load["steps"].items():
            quantiles = ("p99",) if family == "loop_lag" else ("p50", "p99")
            for q in quantiles:
                xs, ys = _series(steps, family, q)
                style = "-" if q == "p50" or family == "loop_lag" else "--"
                ax.plot(
                    xs,
                    [y * 1000 for y in ys],
                    style,
                    marker="o",
                    color=COLORS[name],
                    label=f"{LABELS[name]} {q}",
                )
        ax.set_title(title)
        ax.set_xlabel("offered messages/s")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[1][1]
    top = 0.0
    for name, steps in load["steps"].items():
        xs, ys = _series(steps, "throughput")
        top = max([top, *xs, *ys])
        ax.plot(xs, ys, "-o", color=COLORS[name], label=LABELS[name])
    ax.plot([0, top], [0, top], ":", color="grey", label="offered")
    ax.set_title("replies completed per second")
    ax.set_xlabel("offered messages/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("channeld vs a bare dingtalk-stream bot, same emulator, same fake LLM")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scale(scale: Mapping[str, Any], path: Path) -> None:
    """Scenario c: connect time and memory over the channel count."""
    runs = scale["runs"]
    xs = [r["channels"] for r in runs]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.8))
    left.plot(xs, [r["time_to_all"] or 0 for r in runs], "-o", color=COLORS["channeld"])
    left.set_title("daemon start → all channels connected (s)")
    middle.plot(xs, [r["rss_bytes"] / 1024 / 1024 for r in runs], "-o", color=COLORS["channeld"])
    middle.axhline(250, color="red", linestyle=":", label="goal 250 MB")
    middle.set_title("RSS (MB)")
    middle.legend(fontsize=7)
    right.plot(xs, [r["idle_cpu_percent"] for r in runs], "-o", color=COLORS["channeld"])
    right.set_title("idle CPU (% of one core)")
    for ax in (left, middle, right):
        ax.set_xlabel("channels")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_coalescing(co: Mapping[str, Any], path: Path) -> None:
    """Scenario d: streaming requests per second against the budget, and staleness."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    per_sec = co["stream_requests_per_second"]
    left.bar(range(len(per_sec)), per_sec, color=COLORS["channeld"], label="card streaming calls")
    left.axhline(co["budget_per_second"], color="red", linestyle=":", label="per-channel budget")
    left.set_title(f"{co['streams']} concurrent streams on one channel")
    left.set_xlabel("second")
    left.set_ylabel("requests")
    left.legend(fontsize=7)
    samples = co["staleness_samples"]
    if samples:
        ys = [(i + 1) / len(samples) for i in range(len(samples))]
        right.plot([s * 1000 for s in samples], ys, color=COLORS["channeld"])
    right.set_title("token staleness (LLM wrote it → card showed it)")
    right.set_xlabel("ms")
    right.set_ylabel("fraction of tokens")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_plots(results: Mapping[str, Any], out: Path, suffix: str = "") -> list[str]:
    """Writes every plot the results allow; returns their file names."""
    names = []
    if "load" in results:
        names.append(f"load{suffix}.png")
        plot_load(results["load"], out / names[-1])
    if "scale" in results:
        names.append(f"scale{suffix}.png")
        plot_scale(results["scale"], out / names[-1])
    if "coalescing" in results:
        names.append(f"coalescing{suffix}.png")
        plot_coalescing(results["coalescing"], out / names[-1])
    return names
