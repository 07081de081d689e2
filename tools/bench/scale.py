"""Scenario c: many channels on one daemon, all connected to one emulator; then idle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tools.bench import config as cfg
from tools.bench.config import BenchSettings
from tools.bench.probe import EmulatorClient
from tools.bench.procs import Processes, channeld, free_port


def linear_slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None for fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den


async def _connected_at(emu: EmulatorClient, apps: set[str], since: float) -> dict[str, float]:
    """When each app first opened a connection after `since` (emulator clock)."""
    first: dict[str, float] = {}
    for conn in await emu.connections():
        opened = float(conn["opened_at"])
        if conn["client_id"] in apps and opened >= since:
            first[conn["client_id"]] = min(first.get(conn["client_id"], opened), opened)
    return first


async def run_one(
    procs: Processes,
    emu: EmulatorClient,
    settings: BenchSettings,
    *,
    count: int,
    llm_url: str,
    workdir: Path,
) -> dict[str, Any]:
    """Start a daemon with `count` channels, time their connections, then watch it idle."""
    apps = cfg.app_ids("sc", count)
    admin = f"127.0.0.1:{free_port()}"
    conf = workdir / f"scale-{count}.toml"
    conf.write_text(
        cfg.daemon_config(
            state_dir=workdir / f"state-scale-{count}",
            admin_listen=admin,
            api_base=emu.url,
            llm_url=llm_url,
            client_ids=apps,
        )
    )
    spawned = time.monotonic()
    daemon = await procs.start(
        f"channeld-scale-{count}", channeld("run", "--config", str(conf)), wait_url=False
    )
    wanted = set(apps)
    deadline = spawned + settings.connect_timeout
    connected: dict[str, float] = {}
    while time.monotonic() < deadline and daemon.alive():
        live = await emu.live_apps()
        if wanted <= live:
            connected = await _connected_at(emu, wanted, spawned)
            break
        await asyncio.sleep(0.2)
    all_at = max(connected.values()) if len(connected) == count else None
    await asyncio.sleep(2.0)  # let the last handshakes' work settle before the idle window
    cpu_before = daemon.cpu()
    await asyncio.sleep(settings.idle_seconds)
    idle_cpu = daemon.cpu() - cpu_before
    rss = daemon.rss()
    still_live = len(wanted & await emu.live_apps())
    await daemon.stop(grace=30)
    return {
        "channels": count,
        "connected": len(connected),
        "time_to_first": min(connected.values()) - spawned if connected else None,
        "time_to_all": all_at - spawned if all_at is not None else None,
        "connect_spread": all_at - min(connected.values()) if all_at is not None else None,
        "rss_bytes": rss,
        "rss_per_channel": rss / count,
        "idle_seconds": settings.idle_seconds,
        "idle_cpu_seconds": idle_cpu,
        "idle_cpu_percent": 100 * idle_cpu / settings.idle_seconds,
        "live_after_idle": still_live,
    }


async def run_scale(
    procs: Processes,
    emu: EmulatorClient,
    settings: BenchSettings,
    llm_url: str,
    workdir: Path,
) -> dict[str, Any]:
    """Every channel count in turn, each on a fresh daemon and database."""
    runs = []
    for count in settings.scale_channels:
        print(f"  scale: {count} channels", flush=True)
        runs.append(
            await run_one(procs, emu, settings, count=count, llm_url=llm_url, workdir=workdir)
        )
    slope = linear_slope([(r["channels"], r["rss_bytes"]) for r in runs])
    return {"runs": runs, "rss_marginal_per_channel": slope}
