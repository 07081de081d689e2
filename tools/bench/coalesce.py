"""Scenario d: many concurrent streams on one channel against its card-update budget."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tools.bench import measure, stats
from tools.bench.config import BenchSettings
from tools.bench.probe import EmulatorClient, read_jsonl

STEP = 90  # tags of this scenario: bm90n...


def analyse(
    calls: list[dict[str, Any]],
    traces: dict[str, Any],
    client_id: str,
    budget: float,
) -> dict[str, Any]:
    """Update rates against the budget, and how stale each token was when shown.

    The budget is a token bucket (rate `budget`, burst `round(budget)`), paid once per streaming
    call; the calls conform when no run of them needs a larger burst than the bucket holds.
    """
    app_calls = [c for c in calls if c.get("client_id") == client_id]
    cards = measure.group_cards(app_calls)
    stream_times = [float(c["at"]) for c in app_calls if c["path"] == measure.STREAM_PATH]
    card_times = [
        float(c["at"])
        for c in app_calls
        if c["path"] in (measure.STREAM_PATH, "/v1.0/card/instances")
    ]
    stale: list[float] = []
    per_stream_updates = []
    for entries in cards.values():
        found = measure.card_tag(entries)
        trace = traces.get(found or "")
        if trace is None:
            continue
        updates = [
            (float(c["at"]), len(str(c["body"].get("content", ""))))
            for c in entries
            if c["path"] == measure.STREAM_PATH and c.get("status") == 200
        ]
        per_stream_updates.append(len(updates))
        stale += measure.staleness(trace["token_times"], trace["tokens"], updates)
    start = min(stream_times, default=0.0)
    end = max(stream_times, default=0.0)
    per_sec = stats.per_second(stream_times, start, end + 1e-9)
    burst = max(1, round(budget))  # how channels.manager sizes each channel's bucket
    needed = stats.needed_burst(stream_times, budget)
    return {
        "streams": len(per_stream_updates),
        "budget_per_second": budget,
        "stream_requests": len(stream_times),
        "stream_requests_per_second": per_sec,
        "stream_rps_mean": len(stream_times) / (end - start) if end > start else None,
        "stream_rps_max_1s": stats.max_in_window(stream_times),
        "card_rps_max_1s": stats.max_in_window(card_times),
        "updates_per_stream": stats.summary([float(n) for n in per_stream_updates]),
        "staleness": stats.summary(stale),
        "staleness_samples": sorted(stale),
        "bucket_burst": burst,
        "needed_burst": needed,
        # One token of slack: arrival times at the emulator carry the network's jitter.
        "within_budget": needed <= burst + 1,
    }


async def run_coalescing(
    emu: EmulatorClient,
    settings: BenchSettings,
    client_id: str,
    traces_file: Path,
) -> dict[str, Any]:
    """`streams` users ask at once; each answer streams for stream_words tokens."""
    print(f"  coalescing: {settings.streams} streams", flush=True)
    await emu.new_calls()
    first_call = len(emu.calls)

    async def ask(index: int) -> str:
        text = measure.user_text(STEP, index, settings.stream_words)
        await emu.message(client_id, text, f"co{index}")
        return measure.tag(STEP, index)

    tags = set(await asyncio.gather(*(ask(i) for i in range(settings.streams))))
    expected = settings.first_token_delay + settings.token_interval * settings.stream_words
    loop = asyncio.get_running_loop()
    deadline = loop.time() + expected * 4 + settings.drain_seconds
    done: set[str] = set()
    while loop.time() < deadline and not done >= tags:
        await asyncio.sleep(0.5)
        for call in await emu.new_calls():
            body = call.get("body")
            if call["path"] == measure.STREAM_PATH and isinstance(body, dict):
                found = measure.TAG.search(str(body.get("content", "")))
                if body.get("isFinalize") and found:
                    done.add(found.group(0))
    traces = measure.index_traces(read_jsonl(traces_file))
    result = analyse(
        emu.calls[first_call:], dict(traces), client_id, settings.card_updates_per_second
    )
    result["finished"] = len(done & tags)
    result["card_update_interval"] = settings.card_update_interval
    return result
