"""Scenarios a and b: channeld and the bare-SDK bot under the same stepped load, interleaved."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tools.bench import measure, stats
from tools.bench.config import BenchSettings
from tools.bench.probe import EmulatorClient, parse_buckets, read_jsonl, scrape
from tools.bench.procs import Proc

BOT_TOPIC = "/v1.0/im/bot/messages/get"
LAG_FAMILY = "channeld_event_loop_lag_seconds"
ACK_FAMILY = "channeld_ack_latency_seconds"
LAG_BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # daemon.metrics
USER_PERIOD = 4.0  # seconds between two messages of one simulated user
WARMUP_STEP = 80  # tags bm80n..., bm81n...: not measured
SETTLE_SECONDS = 120.0  # after a step's deadline, how long its backlog may take to clear


@dataclass
class Target:
    """One system under test: channeld (cards, /metrics) or the baseline bot (webhook, lag file)."""

    name: str
    client_ids: list[str]
    proc: Proc
    cards: bool
    admin_url: str = ""
    lag_file: Path | None = None


async def offer(
    emu: EmulatorClient,
    client_ids: list[str],
    *,
    step: int,
    rate: float,
    seconds: float,
    words: int,
) -> dict[str, str]:
    """Open-loop load: message i leaves at start + i / rate, whatever happened to earlier ones.

    Message i goes to app i mod len(client_ids), from one of ceil(rate * USER_PERIOD) users, so
    that a user's previous answer is long finished when they write again.
    """
    count = max(2, round(rate * seconds))
    users = max(1, math.ceil(rate * USER_PERIOD))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    sent: dict[str, str] = {}

    async def one(index: int) -> None:
        text = measure.user_text(step, index, words)
        app = client_ids[index % len(client_ids)]
        result = await emu.message(app, text, f"s{step}u{index % users}")
        if result.get("delivered"):
            sent[measure.tag(step, index)] = str(result["frame_message_id"])

    tasks = []
    for index in range(count):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    return sent


def _finished(calls: list[dict[str, Any]], target: Target, tags: set[str]) -> set[str]:
    done = set()
    for call in calls:
        if call.get("client_id") not in target.client_ids or call.get("status") != 200:
            continue
        body = call.get("body")
        if not isinstance(body, dict):
            continue
        if target.cards and call["path"] == measure.STREAM_PATH and body.get("isFinalize"):
            text = str(body.get("content", ""))
        elif not target.cards and call["path"] == measure.SESSION_PATH:
            markdown = body.get("markdown")
            text = str(markdown.get("text", "")) if isinstance(markdown, dict) else ""
        else:
            continue
        found = measure.TAG.search(text)
        if found and found.group(0) in tags:
            done.add(found.group(0))
    return done


async def lag_window(
    session: aiohttp.ClientSession, target: Target, start: float, end: float, before: str
) -> dict[str, float | None]:
    """Event-loop lag between two moments: the baseline's probe file, or channeld's histogram
    since the scrape `before`."""
    if target.lag_file is not None:
        samples = [
            float(r["lag"]) for r in read_jsonl(target.lag_file) if start <= float(r["at"]) <= end
        ]
        buckets = stats.to_buckets(samples, LAG_BOUNDS)
        exact = stats.percentile(samples, 99)
    else:
        after = await scrape(session, target.admin_url)
        buckets = stats.bucket_delta(
            parse_buckets(before, LAG_FAMILY), parse_buckets(after, LAG_FAMILY)
        )
        exact = None
    return {
        "p50": stats.histogram_quantile(0.5, buckets),
        "p99": stats.histogram_quantile(0.99, buckets),
        "p99_exact": exact,
        "samples": buckets.get(math.inf, 0.0),
    }


async def histogram_since(
    session: aiohttp.ClientSession, admin_url: str, before: str, family: str
) -> dict[str, float | None]:
    """p50 and p99 of a daemon histogram over what it observed since the scrape `before`."""
    after = await scrape(session, admin_url)
    buckets = stats.bucket_delta(parse_buckets(before, family), parse_buckets(after, family))
    finite = [b for b in buckets if not math.isinf(b)]
    top = buckets[max(finite)] if finite else 0.0
    return {
        "p50": stats.histogram_quantile(0.5, buckets),
        "p99": stats.histogram_quantile(0.99, buckets),
        # beyond the histogram's largest bound: the quantile is only a lower limit
        "p99_capped": top < 0.99 * buckets.get(math.inf, 0.0),
        "count": buckets.get(math.inf, 0.0),
    }


async def _ack_inside(
    session: aiohttp.ClientSession, target: Target, before: str
) -> dict[str, float | None] | None:
    """channeld's own view: frame received to ack sent (`channeld_ack_latency_seconds`)."""
    if not target.admin_url:
        return None
    return await histogram_since(session, target.admin_url, before, ACK_FAMILY)


async def run_step(
    session: aiohttp.ClientSession,
    emu: EmulatorClient,
    target: Target,
    settings: BenchSettings,
    *,
    step: int,
    rate: float,
    traces_file: Path,
    others: list[Proc],
    seconds: float | None = None,
    drain: float | None = None,
) -> dict[str, Any]:
    """Offer `rate` messages per second to one target, wait for the replies, measure."""
    await emu.new_calls()
    first_call = len(emu.calls)
    before = await scrape(session, target.admin_url) if target.admin_url else ""
    cpu_before = target.proc.cpu()
    others_before = {p.name: p.cpu() for p in others}
    loop = asyncio.get_running_loop()
    started = loop.time()
    duration = settings.step_seconds if seconds is None else seconds
    sent = await offer(
        emu, target.client_ids, step=step, rate=rate, seconds=duration, words=settings.words
    )
    offered_until = loop.time()
    tags, done = set(sent), set()
    deadline = offered_until + (settings.drain_seconds if drain is None else drain)
    while loop.time() < deadline:
        done |= _finished(await emu.new_calls(), target, tags)
        if done >= tags:
            break
        await asyncio.sleep(0.25)
    ended = loop.time()
    lag = await lag_window(session, target, started, ended, before)
    ack_inside = await _ack_inside(session, target, before)
    cpu = target.proc.cpu() - cpu_before
    others_cpu = {p.name: p.cpu() - others_before[p.name] for p in others}
    calls = emu.calls[first_call:]
    frames = {f["message_id"]: float(f["at"]) for f in await emu.frames(BOT_TOPIC)}
    acks: dict[str, float] = {}
    for ack in await emu.acks():
        acks.setdefault(str(ack["message_id"]), float(ack["at"]))
    traces = measure.index_traces(read_jsonl(traces_file))
    replies = measure.collect_replies(
        sent, frames, acks, calls, traces, client_ids=target.client_ids, cards=target.cards
    )
    result = summarize(
        target.name,
        rate=rate,
        sent=len(sent),
        replies=replies,
        calls=calls,
        client_ids=target.client_ids,
        cpu=cpu,
        lag=lag,
    )
    result["seconds"] = ended - started
    result["ack_inside"] = ack_inside
    result["other_cpu_seconds"] = others_cpu
    # A backlog left after the deadline would load the machine during the next target's step.
    settle = loop.time() + SETTLE_SECONDS
    while not done >= tags and loop.time() < settle:
        await asyncio.sleep(0.5)
        done |= _finished(await emu.new_calls(), target, tags)
    result["settled"] = done >= tags
    return result


def summarize(
    name: str,
    *,
    rate: float,
    sent: int,
    replies: list[measure.Reply],
    calls: list[dict[str, Any]],
    client_ids: list[str],
    cpu: float,
    lag: Mapping[str, float | None],
) -> dict[str, Any]:
    """The figures of one step."""

    def lat(attr: str) -> list[float]:
        return [v for r in replies if (v := r.latency(attr)) is not None]

    answered = [r for r in replies if r.final_at is not None]
    finals = sorted(float(r.final_at) for r in answered if r.final_at is not None)
    frames = sorted(float(r.frame_at) for r in replies if r.frame_at is not None)
    after_token = [
        r.first_text_at - r.token_times[0]
        for r in replies
        if r.first_text_at is not None and r.token_times
    ]
    last_token = [
        r.final_at - r.token_times[-1] for r in answered if r.final_at is not None and r.token_times
    ]
    first_token = lat("first_text_at")
    llm_first = [
        r.token_times[0] - r.frame_at for r in replies if r.token_times and r.frame_at is not None
    ]
    api = measure.openapi_calls(calls, client_ids)
    return {
        "target": name,
        "rate": rate,
        "sent": sent,
        "answered": len(answered),
        "answered_fraction": len(answered) / sent if sent else 0.0,
        "offered_achieved": stats.steady_rate(frames),
        "throughput": stats.steady_rate(finals),
        "ack": stats.summary(lat("ack_at")),
        "card_shown": stats.summary(lat("shown_at")),
        "first_text": stats.summary(first_token),
        "llm_request": stats.summary(lat("llm_request_at")),
        "llm_first_token": stats.summary(llm_first),
        "first_text_after_token": stats.summary(after_token),
        "reply": stats.summary(lat("final_at")),
        "last_token_to_final": stats.summary(last_token),
        "api_calls_per_reply": sum(api.values()) / len(answered) if answered else None,
        "api_calls": api,
        "cpu_seconds": cpu,
        "cpu_per_1000": 1000 * cpu / len(answered) if answered else None,
        "loop_lag": dict(lag),
    }


def step_holds(step: Mapping[str, Any]) -> dict[str, float | None]:
    """The inputs `stats.sustained_rate` reads."""
    return {
        "offered": float(step["rate"]),
        "offered_achieved": step["offered_achieved"],
        "answered": float(step["answered_fraction"]),
        "throughput": step["throughput"],
        "reply_p50": step["reply"]["p50"],
    }


async def run_load(
    session: aiohttp.ClientSession,
    emu: EmulatorClient,
    targets: list[Target],
    settings: BenchSettings,
    *,
    traces_file: Path,
    others: list[Proc],
) -> dict[str, Any]:
    """A warm-up, then every rate step, each target in turn; a target stops at its first failure."""
    step_no = WARMUP_STEP
    for target in targets:
        print(f"  load: {target.name} warm-up", flush=True)
        await run_step(
            session,
            emu,
            target,
            settings,
            step=step_no,
            rate=settings.warmup_rate,
            traces_file=traces_file,
            others=others,
            seconds=settings.warmup_seconds,
        )
        step_no += 1
    steps: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    stopped: set[str] = set()
    step_no = 0
    for rate in settings.rates:
        for target in targets:
            if target.name in stopped:
                continue
            step_no += 1
            print(f"  load: {target.name} at {rate:g} msg/s", flush=True)
            result = await run_step(
                session,
                emu,
                target,
                settings,
                step=step_no,
                rate=rate,
                traces_file=traces_file,
                others=others,
            )
            steps[target.name].append(result)
            held = stats.sustained_rate([step_holds(s) for s in steps[target.name]])
            if held is None or held < rate:
                stopped.add(target.name)
            await asyncio.sleep(1.0)
    sustained = {
        name: stats.sustained_rate([step_holds(s) for s in results])
        for name, results in steps.items()
    }
    bursts = {}
    for target in targets:
        step_no += 1
        rate = settings.reference_rate
        print(f"  load: {target.name} burst at {rate:g} msg/s", flush=True)
        bursts[target.name] = await run_step(
            session,
            emu,
            target,
            settings,
            step=step_no,
            rate=rate,
            traces_file=traces_file,
            others=others,
            seconds=settings.burst_seconds,
            drain=settings.burst_drain_seconds,
        )
        await asyncio.sleep(1.0)
    return {
        "steps": steps,
        "sustained": sustained,
        "burst": bursts,
        "channels": len(targets[0].client_ids),
    }
