"""`python -m tools.bench [--quick] [--out DIR]`: run every scenario, write results and plots."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench import config as cfg
from tools.bench.coalesce import run_coalescing
from tools.bench.config import BenchSettings
from tools.bench.load import Target, run_load
from tools.bench.probe import EmulatorClient
from tools.bench.procs import (
    ROOT,
    Processes,
    channeld,
    free_port,
    monotonic_is_shared,
    python_module,
)
from tools.bench.report import render_markdown
from tools.bench.report_voice import voice_section
from tools.bench.scale import run_scale
from tools.bench.voice import run as run_voice
from tools.bench.webhooks import run_webhooks

COALESCE_APP = "co-0000"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout  # noqa: S607
    pairs = (line.partition(":") for line in lscpu.splitlines())
    fields = {k.strip(): v.strip() for k, _, v in pairs}
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": fields.get("Model name", ""),
        "architecture": fields.get("Architecture", ""),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


async def _wait_apps(emu: EmulatorClient, apps: set[str], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not apps <= await emu.live_apps():
        if time.monotonic() > deadline:
            raise RuntimeError(f"apps not connected: {sorted(apps - await emu.live_apps())}")
        await asyncio.sleep(0.1)


async def emulator(procs: Processes, name: str, apps: list[str]) -> str:
    """Starts `channeld emulate dingtalk` on a free port with these apps; returns its URL."""
    argv = channeld(
        "emulate",
        "dingtalk",
        "--listen",
        "127.0.0.1:0",
        "--template",
        cfg.TEMPLATE,
        *cfg.emulator_app_args(apps),
    )
    return (await procs.start(name, argv)).url


async def run(
    settings: BenchSettings, workdir: Path, only: set[str], *, profile: bool = False
) -> dict[str, Any]:
    """Every scenario in its own set of processes."""
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": settings.quick,
        "machine": machine(),
        "clock": monotonic_is_shared(),
        "settings": dataclasses.asdict(settings),
    }
    traces = workdir / "llm-traces.jsonl"
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=256)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        Processes(workdir) as procs,
    ):
        llm = await procs.start(
            "llm",
            python_module(
                "tools.bench.llm",
                "--first-token-delay",
                str(settings.first_token_delay),
                "--token-interval",
                str(settings.token_interval),
                "--trace",
                str(traces),
            ),
        )
        if only & {"load", "coalescing"}:
            ours = cfg.app_ids("cd", settings.load_channels)
            theirs = cfg.app_ids("sdk", settings.load_channels)
            url = await emulator(procs, "emulator", [*ours, COALESCE_APP, *theirs])
            emu = EmulatorClient(session, url)
            admin = f"127.0.0.1:{free_port()}"
            conf = workdir / "channeld.toml"
            conf.write_text(
                cfg.daemon_config(
                    state_dir=workdir / "state",
                    admin_listen=admin,
                    api_base=url,
                    llm_url=llm.url,
                    client_ids=[*ours, COALESCE_APP],
                    card_update_interval=settings.card_update_interval,
                    card_updates_per_second=settings.card_updates_per_second,
                )
            )
            argv = channeld("run", "--config", str(conf))
            if profile:
                out = str(workdir / "channeld.prof")
                argv = python_module("cProfile", "-o", out, "-m", "daemon", *argv[1:])
            daemon = await procs.start("channeld", argv, wait_url=False)
            lag_file = workdir / "baseline-lag.jsonl"
            apps = [arg for app in theirs for arg in ("--client-id", app)]
            baseline = await procs.start(
                "baseline",
                python_module(
                    "tools.bench.baseline_bot",
                    "--api-base",
                    url,
                    *apps,
                    "--client-secret",
                    cfg.SECRET,
                    "--llm-url",
                    llm.url,
                    "--lag-file",
                    str(lag_file),
                ),
                wait_url=False,
            )
            await _wait_apps(emu, {*ours, COALESCE_APP, *theirs})
            emulator_proc = next(p for p in procs.procs if p.name == "emulator")
            if "load" in only:
                targets = [
                    Target("channeld", ours, daemon, cards=True, admin_url=f"http://{admin}"),
                    Target("baseline", theirs, baseline, cards=False, lag_file=lag_file),
                ]
                results["load"] = await run_load(
                    session, emu, targets, settings, traces_file=traces, others=[emulator_proc, llm]
                )
            if "coalescing" in only:
                results["coalescing"] = await run_coalescing(emu, settings, COALESCE_APP, traces)
            for proc in (baseline, daemon):
                await proc.stop()
        if "scale" in only:
            url = await emulator(
                procs, "emulator-scale", cfg.app_ids("sc", max(settings.scale_channels))
            )
            emu = EmulatorClient(session, url)
            results["scale"] = await run_scale(procs, emu, settings, llm.url, workdir)
        if "webhooks" in only:
            results["webhooks"] = await run_webhooks(
                session, procs, settings, llm_url=llm.url, traces_file=traces, workdir=workdir
            )
        if "voice" in only:
            results["voice"] = await run_voice(
                session, procs, quick=settings.quick, workdir=workdir
            )
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario at small scale")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument(
        "--only",
        default="load,coalescing,scale,webhooks,voice",
        help="comma-separated scenarios (load, coalescing, scale, webhooks, voice)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the load daemon under cProfile (WORKDIR/channeld.prof; implies --keep)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="redraw results.md and the plots from the results JSON already in --out",
    )
    args = parser.parse_args(argv)
    settings = BenchSettings.quick_mode() if args.quick else BenchSettings()
    out: Path = args.out
    suffix = "-quick" if settings.quick else ""
    if args.render_only:
        results = json.loads((out / f"results{suffix}.json").read_text())
        write_report(results, out, suffix)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="channeld-bench-"))
    print(f"benchmark work directory: {workdir}", flush=True)
    began = time.monotonic()
    only = set(args.only.split(","))
    results = asyncio.run(run(settings, workdir, only, profile=args.profile))
    results["wall_seconds"] = round(time.monotonic() - began, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, out, suffix)
    print((out / f"results{suffix}.md").read_text())
    print(f"done in {results['wall_seconds']} s; results in {out}", flush=True)
    if not (args.keep or args.profile):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def write_report(results: dict[str, Any], out: Path, suffix: str) -> None:
    """results{suffix}.md and the PNG plots beside it."""
    from tools.bench.plots import render_plots  # noqa: PLC0415 - matplotlib only when plotting

    images = render_plots(results, out, suffix)
    text = render_markdown(results, images)
    if "voice" in results:
        text += "\n" + "\n".join(voice_section(results["voice"]))
    (out / f"results{suffix}.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
