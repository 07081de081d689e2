"""Render docs/dashboard.png: the panels of systemd/grafana-dashboard.json over channeld_* metrics.

There is no Grafana to screenshot, so matplotlib draws the dashboard's own layout (titles, grid
positions, panel types, value mappings). The numbers are not drawn by hand: a simulated three-hour
workload drives daemon.metrics.Metrics, its registry is sampled every 15 s into an OpenMetrics file,
`promtool tsdb create-blocks-from openmetrics` backfills that into a TSDB, and a local Prometheus
evaluates each panel's own PromQL. Needs matplotlib (`pip install matplotlib`) and the prometheus
and promtool binaries (Debian package `prometheus`). Usage: python tools/render_dashboard.py [OUT]
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from daemon.metrics import Metrics  # noqa: E402 - importable only once the checkout is on the path

SCRAPE, STEP, MINUTES = 15, 120, 180
TARGET = {"instance": "channeld-1:8787", "job": "channeld"}  # what a scrape would add
CAPTION = (
    "rendered from channeld_* metrics by tools/render_dashboard.py "
    "(layout of systemd/grafana-dashboard.json); data: a simulated 3 h workload driving "
    "daemon.metrics.Metrics, each panel's PromQL evaluated by Prometheus"
)
COLORS = {"green": "#73BF69", "yellow": "#FADE2A", "red": "#F2495C", "dark-red": "#C4162A"}
COLORS["text"] = "#8E8E9E"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FF9830"]
BG, PANEL, FG = "#111217", "#181b1f", "#ccccdc"
HEADER, ROW = 0.9, 0.34  # inches
LEGEND = {"fontsize": 7, "frameon": False, "labelcolor": FG}
RATES = {"sales": 0.22, "support": 0.12, "hr": 0.03}  # messages per second at the daily mean


# (from minute, to minute, state meanwhile): support loses its session a few times, once for eight
# minutes of failing attempts; HR's secret is rotated on the platform, then the channel is edited.
INCIDENTS = {
    "support": [
        *[(m, m + 1, "disconnected") for m in (22, 95, 131)],
        *[(m, m + 1, "disconnected" if m % 2 == 0 else "connecting") for m in range(70, 78)],
    ],
    "hr": [(120, 140, "failed"), (140, 141, "connecting")],
}


def state_at(channel: str, minute: float) -> str:
    if minute < 0.5:
        return "connecting"
    for begin, end, state in INCIDENTS.get(channel, []):
        if begin <= minute < end:
            return state
    return "connected"


def simulate(metrics: Metrics, start: float, rng: np.random.Generator) -> Iterator[float]:
    """Apply 15 s of traffic at a time and yield the time at which to sample the registry."""
    metrics.set_channel_state("legacy", "dingtalk", "disabled")
    seen: dict[str, str] = {}
    for step in range(MINUTES * 60 // SCRAPE):
        t, minute = start + step * SCRAPE, step * SCRAPE / 60
        incident = 100 <= minute < 112  # the LLM provider is slow and failing
        for channel, rate in RATES.items():
            state = state_at(channel, minute)
            if state == "connected" and seen.get(channel, "connected") != "connected":
                metrics.reconnected(channel, "dingtalk")
                for _ in range(rng.poisson(4)):  # the platform redelivers what was unacked
                    metrics.message_duplicate(channel, "dingtalk")
            metrics.set_channel_state(channel, "dingtalk", state)
            seen[channel] = state
            if state != "connected":
                continue
            agent = "hr-kb" if channel == "hr" else "default"
            load = rate * SCRAPE * (1 + 0.5 * np.sin(2 * np.pi * minute / MINUTES))
            for _ in range(rng.poisson(load * 0.15)):
                metrics.message_ignored(channel, "dingtalk")
            for _ in range(rng.poisson(load * 0.01)):
                metrics.message_duplicate(channel, "dingtalk")
            for _ in range(rng.poisson(load)):
                metrics.message_received(channel, "dingtalk", at=t)
                metrics.ack_latency(channel, "dingtalk", rng.lognormal(np.log(0.0015), 0.6))
                llm = rng.lognormal(np.log(14 if incident else 5), 0.4)
                metrics.llm_request(agent, llm)
                metrics.llm_tokens(agent, int(rng.normal(900, 150)), int(llm * 45))
                metrics.platform_request(channel, "dingtalk", "card.create", 200)
                outcome = rng.choice(
                    ["replied", "failed", "cancelled"],
                    p=[0.64, 0.35, 0.01] if incident else [0.975, 0.015, 0.01],
                )
                metrics.reply(channel, "dingtalk", str(outcome))
                if outcome == "failed":
                    metrics.platform_request(channel, "dingtalk", "robot.send", 200)
                    continue
                first = rng.lognormal(np.log(4.5 if incident else 1.1), 0.35)
                metrics.reply_first_update(channel, "dingtalk", first)
                for _ in range(rng.integers(4, 12)):
                    status = 429 if rng.random() < 0.01 * load else 200
                    metrics.platform_request(channel, "dingtalk", "card.streaming", status)
        for _ in range(SCRAPE * 4):  # the lag monitor wakes every 250 ms
            blocked = 150 <= minute < 152 and rng.random() < 0.3  # a synchronous call sneaked in
            metrics.loop_lag(rng.gamma(2, 0.0004) + (rng.uniform(0.12, 0.35) if blocked else 0))
        yield t


def openmetrics(metrics: Metrics, samples_at: Iterator[float]) -> str:
    """Sample the registry at each yielded time; group the points per series as OpenMetrics asks."""
    types: dict[str, str] = {}
    series: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in samples_at:
        for family in metrics.registry.collect():
            types[family.name] = family.type
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in (TARGET | s.labels).items())
                key = ",".join(f"{k}={v}" for k, v in s.labels.items() if k != "le")
                series[family.name, key].append(f"{s.name}{{{labels}}} {s.value} {t:.3f}")
    lines = []
    for name, kind in types.items():
        lines.append(f"# TYPE {name} {kind}")
        lines += [line for (fam, _), points in series.items() if fam == name for line in points]
    return "\n".join([*lines, "# EOF", ""])


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} not found: install the Debian package `prometheus`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def query(base: str, path: str, **params: Any) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own loopback Prometheus
        return json.load(response)["data"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt == "__auto":
        return ",".join(labels.values()) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt)


def human(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    return f"{value:.2f}/s" if unit == "reqps" else f"{value:.3g}"


def series_of(panel: dict[str, Any], base: str, start: float, end: float) -> list[dict[str, Any]]:
    """The panel's targets, with Grafana's variables filled in, as Prometheus answers them."""
    results = []
    for target in panel["targets"]:
        expr = target["expr"].replace("$channel", ".*")
        expr = expr.replace("$__rate_interval", f"{max(4 * SCRAPE, STEP + SCRAPE)}s")
        if target.get("instant"):
            results += query(base, "/api/v1/query", query=expr, time=end)["result"]
            continue
        data = query(base, "/api/v1/query_range", query=expr, start=start, end=end, step=STEP)
        for r in data["result"]:
            r["legend"] = legend(target["legendFormat"], r["metric"])
            r["times"] = [datetime.fromtimestamp(t, UTC) for t, _ in r["values"]]
            r["y"] = np.array([float(v) for _, v in r["values"]])
        # A channel with no observations yet has NaN quantiles: nothing to draw.
        kept = [r for r in data["result"] if not np.isnan(r["y"]).all()]
        results += sorted(kept, key=lambda r: r["legend"])
    return results


def mapping(field_config: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {k: v for m in field_config.get("mappings", []) for k, v in m["options"].items()}


def draw_table(ax: Any, panel: dict[str, Any], results: list[dict[str, Any]]) -> None:
    order = panel["transformations"][0]["options"]["indexByName"]
    columns = sorted(order, key=order.get)
    rows = sorted([r["metric"].get(c, "") for c in columns] for r in results)
    colours = mapping({"mappings": panel["fieldConfig"]["overrides"][0]["properties"][1]["value"]})
    table = ax.table(cellText=rows, colLabels=columns, loc="upper center", cellLoc="left")
    table.scale(1, 1.3)
    for (row, col), cell in table.get_celld().items():
        text = cell.get_text().get_text()
        coloured = row > 0 and columns[col] == "state"
        cell.set(facecolor=COLORS[colours[text]["color"]] if coloured else PANEL, edgecolor=BG)
        cell.get_text().set(color=BG if coloured else FG, weight="bold" if row == 0 else "normal")


def draw_stat(ax: Any, panel: dict[str, Any], results: list[dict[str, Any]]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    for i, r in enumerate(results):
        m = mapping(defaults).get(f"{r['y'][-1]:g}")
        x, y = i % 2 * 0.5 + 0.01, 0.52 - i // 2 * 0.52
        colour = COLORS[m["color"]] if m else "#22252b"
        ax.add_patch(plt.Rectangle((x, y), 0.48, 0.46, color=colour, transform=ax.transAxes))
        text = m["text"] if m else human(r["y"][-1], defaults["unit"])
        ax.text(x + 0.24, y + 0.2, text, ha="center", fontsize=13, color="white", weight="bold")
        ax.text(x + 0.24, y + 0.05, r["legend"], ha="center", fontsize=8, color=BG if m else FG)


def draw_states(ax: Any, panel: dict[str, Any], results: list[dict[str, Any]]) -> None:
    mapped = mapping(panel["fieldConfig"]["defaults"])
    for row, r in enumerate(reversed(results)):
        for t, v in zip(r["times"], r["y"], strict=True):
            colour = COLORS[mapped[f"{v:g}"]["color"]]
            ax.broken_barh([(mdates.date2num(t), STEP / 86400)], (row - 0.42, 0.84), color=colour)
        ax.text(r["times"][0], row, f" {r['legend']}", va="center", fontsize=8, color=BG)
    ax.set(yticks=[], xlim=(results[0]["times"][0], results[0]["times"][-1]))
    ax.grid(visible=False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[m["color"]]) for m in mapped.values()]
    labels = [m["text"] for m in mapped.values()]
    ax.legend(handles, labels, ncol=5, loc="lower right", bbox_to_anchor=(1, 1), **LEGEND)


def draw_lines(ax: Any, panel: dict[str, Any], results: list[dict[str, Any]]) -> None:
    defaults, overrides = panel["fieldConfig"]["defaults"], panel["fieldConfig"]["overrides"]
    stacked = defaults["custom"].get("stacking", {}).get("mode") == "normal"
    fixed = {o["matcher"]["options"]: o["properties"][0]["value"]["fixedColor"] for o in overrides}
    bottom = np.zeros(len(results[0]["y"]))
    for i, r in enumerate(results):
        low = bottom if stacked else np.zeros(len(r["y"]))
        colour = COLORS[fixed[r["legend"]]] if r["legend"] in fixed else PALETTE[i % len(PALETTE)]
        ax.plot(r["times"], low + r["y"], color=colour, linewidth=1, label=r["legend"])
        alpha = 0.35 if stacked else 0.08
        ax.fill_between(r["times"], low, low + r["y"], color=colour, alpha=alpha)
        bottom = low + r["y"]
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is not None:
            ax.axhline(step["value"], color=COLORS[step["color"]], linestyle="--", linewidth=0.8)
    ax.yaxis.set_major_formatter(lambda v, _: human(v, defaults["unit"]))
    ax.set_xlim(results[0]["times"][0], results[0]["times"][-1])
    below = 0.22 / (ax.bbox.height / ax.figure.dpi)  # the legend sits under the tick labels
    ax.legend(ncol=4, loc="upper left", bbox_to_anchor=(0, -below), **LEGEND)


DRAW = {"table": draw_table, "stat": draw_stat, "state-timeline": draw_states}
DRAW["timeseries"] = draw_lines


def render(
    board: dict[str, Any], base: str, *, start: float, end: float, note: str, out: Path
) -> None:
    """Each panel at its grid position: 24 columns, one row unit is ROW inches."""
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    width, height = 16.0, HEADER + rows * ROW
    fig = plt.figure(figsize=(width, height), dpi=110, facecolor=BG)
    fig.text(0.01, 1 - 0.3 / height, board["title"], color=FG, fontsize=15, weight="bold", va="top")
    fig.text(0.01, 1 - 0.65 / height, note, color="#8e8e9e", fontsize=8.5, va="top")
    for panel in board["panels"]:
        g, kind = panel["gridPos"], panel["type"]
        x, y, w, h = g["x"] * width / 24, HEADER + g["y"] * ROW, g["w"] * width / 24, g["h"] * ROW
        corner = ((x + 0.03) / width, 1 - (y + h - 0.03) / height)
        size = {"width": (w - 0.06) / width, "height": (h - 0.06) / height}
        fig.patches.append(
            plt.Rectangle(corner, **size, color=PANEL, transform=fig.transFigure, zorder=-1)
        )
        fig.text((x + 0.12) / width, 1 - (y + 0.1) / height, panel["title"], color=FG, va="top")
        # inches kept free for the title above, y labels to the left, ticks and legend below
        left = 0.6 if kind == "timeseries" else 0.15
        below = {"timeseries": 0.75, "state-timeline": 0.3}.get(kind, 0.1)
        rect = ((x + left) / width, 1 - (y + h - below) / height, (w - left - 0.15) / width)
        ax = fig.add_axes((*rect, (h - 0.4 - below) / height), facecolor=PANEL)
        ax.tick_params(colors=FG, labelsize=7)
        ax.grid(color="#2c3038", linewidth=0.5)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
        for spine in ax.spines.values():
            spine.set_visible(False)
        if kind in ("table", "stat"):
            ax.axis("off")
        DRAW[kind](ax, panel, series_of(panel, base, start, end))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor=BG)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png"
    board = json.loads((ROOT / "systemd" / "grafana-dashboard.json").read_text())
    end = (time.time() // STEP) * STEP - 5 * 60  # whole steps, safely before Prometheus's "now"
    start = end - MINUTES * 60
    metrics = Metrics()
    text = openmetrics(metrics, simulate(metrics, start, np.random.default_rng(7)))
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "in.om").write_text(text)
        Path(tmp, "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
        backfill = [tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", "in.om", "data"]
        subprocess.run(backfill, cwd=tmp, check=True, capture_output=True)  # noqa: S603 - fixed arguments
        port = free_port()
        serve = [tool("prometheus"), "--config.file=prometheus.yml", "--storage.tsdb.path=data"]
        serve.append(f"--web.listen-address=127.0.0.1:{port}")
        server = subprocess.Popen(serve, cwd=tmp, stderr=subprocess.DEVNULL)  # noqa: S603 - fixed arguments
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                with contextlib.suppress(OSError):
                    version = query(base, "/api/v1/status/buildinfo")["version"]
                    break
                time.sleep(0.1)
            else:
                sys.exit("prometheus did not start")
            render(board, base, start=start + STEP, end=end, note=f"{CAPTION} {version}", out=out)
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
