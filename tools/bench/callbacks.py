"""Callback load: WuKongIM `msg.notify` bodies POSTed open loop to a listener, each answer timed."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from tools.bench import measure, stats
from tools.bench.load import histogram_since
from tools.bench.probe import scrape
from tools.bench.procs import OutsideLoad, Proc

PERSON = 1  # WuKongIM's channel type of a direct chat
ID_BASE = 1 << 61  # message ids above 2**53, as the server's snowflake ids are
USER_PERIOD = 4.0  # seconds between two messages of one simulated user, as in the DingTalk load
CALLBACK_FAMILY = "channeld_callback_seconds"


def notify_item(message_id: int, from_uid: str, bot_uid: str, text: str) -> dict[str, Any]:
    """One `msg.notify` item: a user's text message to the bot, shaped as v2.2.5 writes it."""
    payload = json.dumps({"type": 1, "content": text}, separators=(",", ":"), ensure_ascii=False)
    return {
        "header": {"no_persist": 0, "red_dot": 1, "sync_once": 0},
        "setting": 0,
        "message_id": message_id,
        "message_idstr": str(message_id),
        "client_msg_no": f"bench-{message_id}",
        "message_seq": 1,
        "from_uid": from_uid,
        "channel_id": bot_uid,  # a DM to the bot names the bot (the participant not sending)
        "channel_type": PERSON,
        "expire": 0,
        "timestamp": int(time.time()),
        "payload": base64.b64encode(payload.encode()).decode(),
    }


def notify_body(
    *, step: int, index: int, batch: int, rate: float, bot_uid: str, words: int
) -> bytes:
    """Callback `index` of a step: `batch` messages, each from a user of its own.

    Message m = index * batch + k carries the tag `bm<step>n<m>`; users are spread so that one
    writes again only after USER_PERIOD seconds, as in the DingTalk load.
    """
    users = max(batch, math.ceil(rate * batch * USER_PERIOD))
    items = []
    for k in range(batch):
        number = index * batch + k
        message_id = ID_BASE + step * 1_000_000 + number
        text = measure.user_text(step, number, words)
        items.append(notify_item(message_id, f"s{step}u{number % users}", bot_uid, text))
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Shot:
    """One callback: when it was due, sent and answered (time.monotonic()), and the answer."""

    due: float
    sent: float
    answered: float
    status: int  # 0: no HTTP answer
    error: str = ""

    @property
    def latency(self) -> float:
        return self.answered - self.sent


async def post_open_loop(
    session: aiohttp.ClientSession,
    url: str,
    *,
    rate: float,
    seconds: float,
    body: Any,
) -> list[Shot]:
    """Callback i leaves at start + i / rate, whatever became of earlier ones; `body(i)` is its
    body. Each is timed from just before the request to the answer's status line and body."""
    count = max(2, round(rate * seconds))
    start = time.monotonic() + 0.05
    headers = {"Content-Type": "application/json"}

    async def one(index: int, due: float) -> Shot:
        data = body(index)
        sent = time.monotonic()
        try:
            async with session.post(url, data=data, headers=headers) as resp:
                await resp.read()
                return Shot(due, sent, time.monotonic(), resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Shot(due, sent, time.monotonic(), 0, f"{type(exc).__name__}: {exc}")

    tasks = []
    for index in range(count):
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    return list(await asyncio.gather(*tasks))


def summarize_shots(shots: list[Shot], batch: int) -> dict[str, Any]:
    """Answer latency (all answers), how many were not 200, and how late the harness sent."""
    ok = [s for s in shots if s.status == 200]
    sent = sorted(s.sent for s in shots)
    return {
        "callbacks": len(shots),
        "messages": len(shots) * batch,
        "batch": batch,
        "not_ok": len(shots) - len(ok),
        "statuses": sorted({s.status for s in shots}),
        "errors": sorted({s.error for s in shots if s.error})[:5],
        "offered_rate": stats.steady_rate(sent),
        "latency": stats.summary([s.latency for s in shots]),
        "send_lateness": stats.summary([max(0.0, s.sent - s.due) for s in shots]),
    }


@dataclass(frozen=True, slots=True)
class Listener:
    """A callback receiver under test: its hook URL (query included) and its process."""

    name: str
    url: str
    proc: Proc
    admin_url: str = ""  # channeld's, for its own callback histogram


async def run_phase(
    session: aiohttp.ClientSession,
    listener: Listener,
    *,
    step: int,
    rate: float,
    seconds: float,
    batch: int,
    bot_uid: str,
    words: int,
    outside: OutsideLoad,
) -> dict[str, Any]:
    """One open-loop load against one listener; CPU is the listener's while the load lasted."""
    before = await scrape(session, listener.admin_url) if listener.admin_url else ""
    outside.start()
    cpu_before = listener.proc.cpu()
    began = time.monotonic()

    def body(index: int) -> bytes:
        return notify_body(
            step=step, index=index, batch=batch, rate=rate, bot_uid=bot_uid, words=words
        )

    shots = await post_open_loop(session, listener.url, rate=rate, seconds=seconds, body=body)
    cpu = listener.proc.cpu() - cpu_before
    elapsed = time.monotonic() - began
    result = summarize_shots(shots, batch)
    result["target"] = listener.name
    result["rate"] = rate
    result["seconds"] = seconds
    result["elapsed"] = elapsed
    result["outside_cpu_percent"] = outside.percent()
    result["cpu_seconds"] = cpu
    if listener.admin_url:
        result["inside"] = await histogram_since(
            session, listener.admin_url, before, CALLBACK_FAMILY
        )
    return result
