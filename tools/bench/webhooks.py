"""Scenario e: a webhook platform. The callback listener's answer time under an open-loop load,
against a bare handler, then WuKongIM answers end to end through `channeld emulate wukongim`.

One daemon with one WuKongIM channel; the emulator pushes its users' messages (and, as the real
server does, the bot's own, which channeld ignores) to the channel's hook every `push_interval`.
The callback load is POSTed straight to the hook, beside those pushes, and answered through the
emulator's API like any other message.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench import config as cfg
from tools.bench import measure, stats, wukongim
from tools.bench.callbacks import CALLBACK_FAMILY, Listener, run_phase
from tools.bench.config import BenchSettings
from tools.bench.load import USER_PERIOD, Target, histogram_since, lag_window, summarize
from tools.bench.probe import EmulatorClient, read_jsonl, scrape
from tools.bench.procs import OutsideLoad, Proc, Processes, channeld, free_port, python_module

CHANNEL = "wk-bench"
WARMUP_STEP = 70  # tags bm70n...: not measured
SINGLE_STEP, BATCH_STEP = 71, 72
STEADY_STEP, BURST_STEP = 75, 76
EVENT_QUERY = "&event=msg.notify"


class WuKongIMClient(EmulatorClient):
    """The WuKongIM emulator's control plane: users write to the bot; pushes are its acks."""

    async def user_message(self, bot_uid: str, text: str, from_uid: str) -> dict[str, Any]:
        """A user writes to the bot in a direct chat; the answer names the message id."""
        body = {"bot_uid": bot_uid, "from_uid": from_uid, "text": text}
        async with self._session.post(f"{self.url}/_emulator/messages", json=body) as resp:
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result


async def _wait_ready(session: aiohttp.ClientSession, url: str, daemon: Proc) -> None:
    """Until the hook takes an empty `msg.notify` (200 once the channel is connected)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            async with session.post(url, data=b"[]") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if not daemon.alive() or time.monotonic() > deadline:
            raise RuntimeError("the WuKongIM channel did not connect; see channeld-webhooks.log")
        await asyncio.sleep(0.1)


async def _drain(emu: WuKongIMClient, first_call: int, tags: set[str], within: float) -> set[str]:
    """Waits for the answers to `tags` (calls since `first_call`); returns those that ended."""
    deadline = time.monotonic() + within
    done: set[str] = set()
    while True:
        await emu.new_calls()
        done = wukongim.finished_tags(emu.calls[first_call:]) & tags
        if done >= tags or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.25)


async def _callbacks(
    session: aiohttp.ClientSession,
    emu: WuKongIMClient,
    listeners: list[Listener],
    settings: BenchSettings,
    outside: OutsideLoad,
) -> dict[str, Any]:
    """Warm-up, then one message per callback, then a burst of batches; the baseline first each
    time, so that channeld's answers to one phase are over before the next load starts."""
    phases = [
        ("warmup", WARMUP_STEP, 10.0, 2.0, 1),
        ("single", SINGLE_STEP, settings.callback_rate, settings.callback_seconds, 1),
        (
            "batch",
            BATCH_STEP,
            settings.callback_rate,
            settings.burst_seconds,
            settings.callback_batch,
        ),
    ]
    results: dict[str, Any] = {}
    for phase, step, rate, seconds, batch in phases:
        results[phase] = {}
        for listener in listeners:
            print(f"  webhooks: {listener.name}, {rate:g} callbacks/s of {batch}", flush=True)
            await emu.new_calls()
            first_call = len(emu.calls)
            result = await run_phase(
                session,
                listener,
                step=step,
                rate=rate,
                seconds=seconds,
                batch=batch,
                bot_uid=cfg.WUKONGIM_BOT,
                words=settings.words,
                outside=outside,
            )
            if listener.admin_url:
                tags = {measure.tag(step, m) for m in range(result["messages"])}
                began = time.monotonic()
                done = await _drain(emu, first_call, tags, settings.callback_drain_seconds)
                result["answered"] = len(done)
                result["drain_seconds"] = time.monotonic() - began
            results[phase][listener.name] = result
    del results["warmup"]
    return results


async def _offer(
    emu: WuKongIMClient, *, step: int, rate: float, seconds: float, words: int
) -> tuple[dict[str, str], dict[str, float]]:
    """Open-loop user messages through the control plane: tag -> message id, tag -> when the
    harness posted it."""
    count = max(2, round(rate * seconds))
    users = max(1, math.ceil(rate * USER_PERIOD))
    start = time.monotonic() + 0.05
    sent: dict[str, str] = {}
    posted: dict[str, float] = {}

    async def one(index: int) -> None:
        t = measure.tag(step, index)
        posted[t] = time.monotonic()
        text = measure.user_text(step, index, words)
        result = await emu.user_message(cfg.WUKONGIM_BOT, text, f"s{step}u{index % users}")
        sent[t] = str(result["message_id"])

    tasks = []
    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return sent, posted


def receipts(pushes: list[dict[str, Any]]) -> dict[str, float]:
    """Message id -> the first webhook push that delivered it (the emulator's record of it)."""
    first: dict[str, float] = {}
    for push in pushes:
        if push.get("status") == 200:
            for message_id in push["message_ids"]:
                first.setdefault(str(message_id), float(push["at"]))
    return first


async def _end_to_end(
    session: aiohttp.ClientSession,
    emu: WuKongIMClient,
    daemon: Target,
    settings: BenchSettings,
    *,
    step: int,
    rate: float,
    seconds: float,
    drain: float,
    traces_file: Path,
    outside: OutsideLoad,
) -> dict[str, Any]:
    """Users write through the emulator at `rate`; the answers are timed from the emulator's
    records and the LLM's trace, as the DingTalk load times its cards."""
    print(f"  webhooks: WuKongIM end to end at {rate:g} msg/s", flush=True)
    await emu.new_calls()
    first_call = len(emu.calls)
    before = await scrape(session, daemon.admin_url)
    cpu_before = daemon.proc.cpu()
    outside.start()
    started = time.monotonic()
    sent, posted = await _offer(emu, step=step, rate=rate, seconds=seconds, words=settings.words)
    await _drain(emu, first_call, set(sent), drain)
    ended = time.monotonic()
    lag = await lag_window(session, daemon, started, ended, before)
    inside = await histogram_since(session, daemon.admin_url, before, CALLBACK_FAMILY)
    cpu = daemon.proc.cpu() - cpu_before
    calls = emu.calls[first_call:]
    pushed = receipts(await emu.acks())
    traces = measure.index_traces(read_jsonl(traces_file))
    replies = wukongim.collect_replies(sent, pushed, calls, traces)
    result = summarize(
        "wukongim",
        rate=rate,
        sent=len(sent),
        replies=replies,
        calls=[],
        client_ids=[],
        cpu=cpu,
        lag=lag,
    )
    api = wukongim.api_calls(calls)
    answered = result["answered"]
    result.update(
        api_calls=api,
        api_calls_per_reply=sum(api.values()) / answered if answered else None,
        callback_inside=inside,
        outside_cpu_percent=outside.percent(),
        push_delay=stats.summary(
            [pushed[m] - posted[t] for t, m in sent.items() if m in pushed and t in posted]
        ),
        seconds=ended - started,
    )
    return result


async def run_webhooks(
    session: aiohttp.ClientSession,
    procs: Processes,
    settings: BenchSettings,
    *,
    llm_url: str,
    traces_file: Path,
    workdir: Path,
) -> dict[str, Any]:
    """The whole scenario in its own processes: emulator, daemon and the bare ack server."""
    admin = f"127.0.0.1:{free_port()}"
    hooks = f"127.0.0.1:{free_port()}"
    hook = f"http://{hooks}/hooks/{CHANNEL}?key={cfg.WEBHOOK_KEY}"
    emulator = await procs.start(
        "wukongim",
        channeld(
            "emulate",
            "wukongim",
            "--listen",
            "127.0.0.1:0",
            "--bot",
            cfg.WUKONGIM_BOT,
            "--webhook",
            hook,
            "--token",
            cfg.WUKONGIM_TOKEN,
            "--push-interval",
            f"{settings.push_interval:g}",
        ),
    )
    conf = workdir / "webhooks.toml"
    conf.write_text(
        cfg.wukongim_config(
            state_dir=workdir / "state-webhooks",
            admin_listen=admin,
            webhooks_listen=hooks,
            api_base=emulator.url,
            llm_url=llm_url,
            channel_id=CHANNEL,
            card_updates_per_second=settings.wukongim_updates_per_second,
            card_update_interval=settings.card_update_interval,
        )
    )
    daemon = await procs.start(
        "channeld-webhooks", channeld("run", "--config", str(conf)), wait_url=False
    )
    bare = await procs.start(
        "ack-server",
        python_module("tools.bench.ack_server", "--db", str(workdir / "ack-server.sqlite3")),
    )
    await _wait_ready(session, hook + EVENT_QUERY, daemon)
    outside = OutsideLoad(procs)
    emu = WuKongIMClient(session, emulator.url)
    admin_url = f"http://{admin}"
    query = f"/hooks/{CHANNEL}?key={cfg.WEBHOOK_KEY}{EVENT_QUERY}"
    listeners = [
        Listener("baseline", bare.url + query, bare),
        Listener("channeld", f"http://{hooks}{query}", daemon, admin_url=admin_url),
    ]
    results: dict[str, Any] = {
        "callbacks": await _callbacks(session, emu, listeners, settings, outside),
        "push_interval": settings.push_interval,
        "updates_per_second": settings.wukongim_updates_per_second,
    }
    await bare.stop()
    target = Target("channeld", [], daemon, cards=True, admin_url=admin_url)
    shapes = [
        ("steady", STEADY_STEP, settings.rates[0], settings.step_seconds, settings.drain_seconds),
        (
            "burst",
            BURST_STEP,
            settings.reference_rate,
            settings.burst_seconds,
            settings.burst_drain_seconds,
        ),
    ]
    results["end_to_end"] = {}
    for name, step, rate, seconds, drain in shapes:
        results["end_to_end"][name] = await _end_to_end(
            session,
            emu,
            target,
            settings,
            step=step,
            rate=rate,
            seconds=seconds,
            drain=drain,
            traces_file=traces_file,
            outside=outside,
        )
    await daemon.stop()
    await emulator.stop()
    return results
