"""Scenario e: webhook platforms. The callback listener's answer time under an open-loop load,
against a bare handler, then WuKongIM, ZEGO ZIM and Easemob answers end to end through their
emulators (`tools/bench/zim.py`, `tools/bench/easemob.py`).

One daemon with one WuKongIM channel; the emulator pushes its users' messages (and, as the real
server does, the bot's own, which channeld ignores) to the channel's hook every `push_interval`.
The callback load is POSTed straight to the hook, beside those pushes, and answered through the
emulator's API like any other message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench import config as cfg
from tools.bench import e2e, easemob, measure, wukongim, zim
from tools.bench.callbacks import Listener, run_phase
from tools.bench.config import BenchSettings
from tools.bench.load import Target
from tools.bench.probe import EmulatorClient
from tools.bench.procs import OutsideLoad, Processes, channeld, free_port, python_module

CHANNEL = "wk-bench"
WARMUP_STEP = 70  # tags bm70n...: not measured
SINGLE_STEP, BATCH_STEP = 71, 72
STEADY_STEP, BURST_STEP = 75, 76
EVENT_QUERY = "&event=msg.notify"


class WuKongIM:
    """The WuKongIM emulator as an end-to-end `Platform`: users write to the bot; the webhook's
    pushes are the receipts."""

    name = "WuKongIM"

    def __init__(self, emu: EmulatorClient) -> None:
        self.emu = emu

    async def user_message(self, text: str, user: str) -> str:
        """A user writes to the bot in a direct chat."""
        body = {"bot_uid": cfg.WUKONGIM_BOT, "from_uid": user, "text": text}
        return str((await self.emu.post("messages", body))["message_id"])

    async def receipts(self) -> dict[str, float]:
        """Message id -> the first push that delivered it."""
        return receipts(await self.emu.acks())

    def finished(self, calls: e2e.Calls, traces: e2e.Traces) -> set[str]:
        """Streams finished, plain answers sent."""
        return wukongim.finished_tags(calls)

    async def replies(
        self,
        sent: Mapping[str, str],
        receipts: Mapping[str, float],
        calls: e2e.Calls,
        traces: e2e.Traces,
    ) -> list[measure.Reply]:
        """Timed from the anchor, the deltas and the stream's end."""
        return wukongim.collect_replies(sent, receipts, calls, traces)

    def api_calls(self, calls: e2e.Calls) -> dict[str, int]:
        """By path."""
        return wukongim.api_calls(calls)

    async def own_figures(
        self, sent: Mapping[str, str], calls: e2e.Calls, since: float
    ) -> dict[str, Any]:
        """Nothing beyond the shared figures."""
        return {}


async def _callbacks(
    session: aiohttp.ClientSession,
    platform: WuKongIM,
    listeners: list[Listener],
    settings: BenchSettings,
    *,
    traces: e2e.TraceFile,
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
            await platform.emu.new_calls()
            first_call = len(platform.emu.calls)
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
                within = settings.callback_drain_seconds
                done = await e2e.drain(platform, first_call, tags, traces, within)
                result["answered"] = len(done)
                result["drain_seconds"] = time.monotonic() - began
            results[phase][listener.name] = result
    del results["warmup"]
    return results


def receipts(pushes: list[dict[str, Any]]) -> dict[str, float]:
    """Message id -> the first webhook push that delivered it (the emulator's record of it)."""
    first: dict[str, float] = {}
    for push in pushes:
        if push.get("status") == 200:
            for message_id in push["message_ids"]:
                first.setdefault(str(message_id), float(push["at"]))
    return first


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
    admin_url = f"http://{admin}"
    await e2e.wait_up(session, admin_url, CHANNEL, daemon)
    outside = OutsideLoad(procs)
    traces = e2e.TraceFile(traces_file)
    platform = WuKongIM(EmulatorClient(session, emulator.url))
    query = f"/hooks/{CHANNEL}?key={cfg.WEBHOOK_KEY}{EVENT_QUERY}"
    listeners = [
        Listener("baseline", bare.url + query, bare),
        Listener("channeld", f"http://{hooks}{query}", daemon, admin_url=admin_url),
    ]
    results: dict[str, Any] = {
        "callbacks": await _callbacks(
            session, platform, listeners, settings, traces=traces, outside=outside
        ),
        "push_interval": settings.push_interval,
        "updates_per_second": settings.wukongim_updates_per_second,
    }
    await bare.stop()
    target = Target("channeld", [], daemon, cards=True, admin_url=admin_url)
    results["end_to_end"] = await e2e.steady_and_burst(
        session,
        platform,
        target,
        settings,
        steps=(STEADY_STEP, BURST_STEP),
        traces=traces,
        outside=outside,
    )
    await daemon.stop()
    await emulator.stop()
    for name, run in (("zim", zim.run), ("easemob", easemob.run)):
        results[name] = await run(
            session, procs, settings, llm_url=llm_url, traces=traces, workdir=workdir
        )
    return results
