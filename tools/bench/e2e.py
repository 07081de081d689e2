"""End to end on a webhook platform: users write through its emulator at a steady rate or in a
burst, and each answer is timed from the emulator's records and the LLM's trace, as the DingTalk
load times its cards. A `Platform` says how users write and how answers are read."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from tools.bench import measure, stats
from tools.bench.callbacks import CALLBACK_FAMILY
from tools.bench.config import BenchSettings
from tools.bench.load import USER_PERIOD, Target, histogram_since, lag_window, summarize
from tools.bench.probe import EmulatorClient, scrape
from tools.bench.procs import OutsideLoad, Proc, Processes, channeld, free_port

Traces = Mapping[str, Mapping[str, Any]]
Calls = Sequence[Mapping[str, Any]]


class Platform(Protocol):
    """What the runner needs of one platform's emulator."""

    name: str
    emu: EmulatorClient

    async def user_message(self, text: str, user: str) -> str:
        """A user writes `text` to the bot; the platform's id of that message."""

    async def receipts(self) -> dict[str, float]:
        """Message id -> when the platform first delivered it to channeld."""

    def finished(self, calls: Calls, traces: Traces) -> set[str]:
        """Tags whose answer made its last call."""

    async def replies(
        self, sent: Mapping[str, str], receipts: Mapping[str, float], calls: Calls, traces: Traces
    ) -> list[measure.Reply]:
        """One `Reply` per sent message (tag -> message id)."""

    def api_calls(self, calls: Calls) -> dict[str, int]:
        """The bot's platform API calls by kind."""

    async def own_figures(
        self, sent: Mapping[str, str], calls: Calls, since: float
    ) -> dict[str, Any]:
        """Figures only this platform has (`since`: when the step began)."""


class TraceFile:
    """The LLM's JSON-lines trace, read as it grows (a drain polls it many times)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""
        self.by_tag: dict[str, Mapping[str, Any]] = {}

    def update(self) -> dict[str, Mapping[str, Any]]:
        """Traces by tag, including those written since the last look."""
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
            self._offset += len(data)
            lines = (self._rest + data).split(b"\n")
            self._rest = lines.pop()
            rows = []
            for line in lines:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
            self.by_tag.update(measure.index_traces(rows))
        return self.by_tag


async def wait_up(
    session: aiohttp.ClientSession, admin_url: str, channel: str, daemon: Proc
) -> None:
    """Until /metrics says the channel's platform session is established."""
    needle = f'channeld_channel_up{{channel="{channel}"'
    deadline = time.monotonic() + 60
    while True:
        try:
            text = await scrape(session, admin_url)
            if any(line.startswith(needle) and line.endswith(" 1.0") for line in text.splitlines()):
                return
        except aiohttp.ClientError:
            pass
        if not daemon.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"channel {channel} did not connect; see its daemon's log")
        await asyncio.sleep(0.1)


async def drain(
    platform: Platform, first_call: int, tags: set[str], traces: TraceFile, within: float
) -> set[str]:
    """Waits for the answers to `tags` (calls since `first_call`); returns those that ended."""
    deadline = time.monotonic() + within
    while True:
        await platform.emu.new_calls()
        done = platform.finished(platform.emu.calls[first_call:], traces.update()) & tags
        if done >= tags or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.25)


async def offer(
    platform: Platform, *, step: int, rate: float, seconds: float, words: int
) -> tuple[dict[str, str], dict[str, float]]:
    """Open-loop user messages: tag -> message id, tag -> when the harness posted it."""
    count = max(2, round(rate * seconds))
    users = max(1, math.ceil(rate * USER_PERIOD))
    start = time.monotonic() + 0.05
    sent: dict[str, str] = {}
    posted: dict[str, float] = {}

    async def one(index: int) -> None:
        t = measure.tag(step, index)
        posted[t] = time.monotonic()
        text = measure.user_text(step, index, words)
        sent[t] = await platform.user_message(text, f"s{step}u{index % users}")

    tasks = []
    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return sent, posted


async def end_to_end(
    session: aiohttp.ClientSession,
    platform: Platform,
    daemon: Target,
    settings: BenchSettings,
    *,
    step: int,
    rate: float,
    seconds: float,
    within: float,
    traces: TraceFile,
    outside: OutsideLoad,
) -> dict[str, Any]:
    """One step: users write at `rate` for `seconds`; answers are awaited up to `within` s."""
    print(f"  webhooks: {platform.name} end to end at {rate:g} msg/s", flush=True)
    await platform.emu.new_calls()
    first_call = len(platform.emu.calls)
    before = await scrape(session, daemon.admin_url)
    cpu_before = daemon.proc.cpu()
    outside.start()
    started = time.monotonic()
    sent, posted = await offer(
        platform, step=step, rate=rate, seconds=seconds, words=settings.words
    )
    await drain(platform, first_call, set(sent), traces, within)
    ended = time.monotonic()
    lag = await lag_window(session, daemon, started, ended, before)
    inside = await histogram_since(session, daemon.admin_url, before, CALLBACK_FAMILY)
    cpu = daemon.proc.cpu() - cpu_before
    calls = platform.emu.calls[first_call:]
    received = await platform.receipts()
    replies = await platform.replies(sent, received, calls, traces.update())
    result = summarize(
        platform.name,
        rate=rate,
        sent=len(sent),
        replies=replies,
        calls=[],
        client_ids=[],
        cpu=cpu,
        lag=lag,
    )
    api = platform.api_calls(calls)
    answered = result["answered"]
    result.update(
        api_calls=api,
        api_calls_per_reply=sum(api.values()) / answered if answered else None,
        callback_inside=inside,
        outside_cpu_percent=outside.percent(),
        push_delay=stats.summary(
            [received[m] - posted[t] for t, m in sent.items() if m in received and t in posted]
        ),
        seconds=ended - started,
        **await platform.own_figures(sent, calls, started),
    )
    return result


async def steady_and_burst(
    session: aiohttp.ClientSession,
    platform: Platform,
    daemon: Target,
    settings: BenchSettings,
    *,
    steps: tuple[int, int],
    traces: TraceFile,
    outside: OutsideLoad,
    warmup_step: int | None = None,
) -> dict[str, Any]:
    """At the lowest load rate, then a burst at the reference rate (after an unrecorded
    warm-up of a fresh daemon: imports, connections, caches)."""
    shapes = {
        "steady": (steps[0], settings.rates[0], settings.step_seconds, settings.drain_seconds),
        "burst": (
            steps[1],
            settings.reference_rate,
            settings.burst_seconds,
            settings.burst_drain_seconds,
        ),
    }
    if warmup_step is not None:
        shapes = {"warmup": (warmup_step, 5.0, 1.0, settings.drain_seconds), **shapes}
    results = {}
    for name, (step, rate, seconds, within) in shapes.items():
        results[name] = await end_to_end(
            session,
            platform,
            daemon,
            settings,
            step=step,
            rate=rate,
            seconds=seconds,
            within=within,
            traces=traces,
            outside=outside,
        )
    results.pop("warmup", None)
    return results


async def run_channel(
    session: aiohttp.ClientSession,
    procs: Processes,
    settings: BenchSettings,
    *,
    name: str,
    emulator_argv: Callable[[str], Sequence[str]],
    config: Callable[[str, str, str], str],
    platform: Callable[[EmulatorClient], Platform],
    channel_id: str,
    steps: tuple[int, int, int],
    traces: TraceFile,
    workdir: Path,
) -> dict[str, Any]:
    """A platform's emulator (`emulator_argv(callback listener)`: its `channeld emulate`
    options) and a daemon with one channel on it (`config(admin, listener, emulator URL)`):
    a warm-up, then a steady step and a burst (`steps`: their tags)."""
    admin, hooks = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    emulator = await procs.start(name, channeld("emulate", name, *emulator_argv(hooks)))
    conf = workdir / f"{name}.toml"
    conf.write_text(config(admin, hooks, emulator.url))
    daemon = await procs.start(
        f"channeld-{name}", channeld("run", "--config", str(conf)), wait_url=False
    )
    admin_url = f"http://{admin}"
    await wait_up(session, admin_url, channel_id, daemon)
    warmup, steady, burst = steps
    results = await steady_and_burst(
        session,
        platform(EmulatorClient(session, emulator.url)),
        Target("channeld", [], daemon, cards=True, admin_url=admin_url),
        settings,
        steps=(steady, burst),
        traces=traces,
        outside=OutsideLoad(procs),
        warmup_step=warmup,
    )
    await daemon.stop()
    await emulator.stop()
    return results
