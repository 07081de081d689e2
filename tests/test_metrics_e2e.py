"""/metrics on a running daemon reflects the traffic sent through the emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from channels.dingtalk.emulator import EmulatorThread
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import DINGTALK_CLIENT_ID, dingtalk_emulator
from tests.e2e_support import start_stack, wait_until
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

FAMILIES = {
    "channeld_channel_up",
    "channeld_channel_state",
    "channeld_channel_reconnects",
    "channeld_channel_last_event_timestamp_seconds",
    "channeld_messages_received",
    "channeld_messages_duplicate",
    "channeld_frames_dropped",
    "channeld_ack_latency_seconds",
    "channeld_reply_first_update_seconds",
    "channeld_replies",
    "channeld_platform_requests",
    "channeld_llm_request_seconds",
    "channeld_llm_tokens",
    "channeld_event_loop_lag_seconds",
    "channeld_build_info",
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def finished_card_with(text: str) -> Callable[[list[dict[str, Any]]], bool]:
    """A predicate on a chat's bot items: a finished card shows `text`."""
    return lambda items: any(
        i["kind"] == "card" and i.get("done") and text in i["text"] for i in items
    )


async def test_metrics_match_the_traffic(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> None:
    stack = await start_stack(tmp_path, dingtalk_emulator, fake_llm)
    try:
        await stack.connected()
        for text in ("one", "two", "three"):
            sent = await stack.say(text)
            await stack.wait_bot_items(sent.conversation_id, finished_card_with(text))
        await dingtalk_emulator.call(lambda e: e.redeliver(sent.frame_message_id))
        await dingtalk_emulator.wait_for(lambda e: len(e.acks(sent.frame_message_id)) == 2)
        await dingtalk_emulator.call(lambda e: e.push_raw(DINGTALK_CLIENT_ID, "not json {"))
        await wait_until(
            lambda: stack.metric("channeld_frames_dropped_total", reason="unreadable") == 1
        )
        await dingtalk_emulator.drop(DINGTALK_CLIENT_ID)
        await wait_until(lambda: stack.supervisor.status().reconnects == 1)
        await stack.connected()
        assert stack.daemon.admin is not None
        url = f"http://127.0.0.1:{stack.daemon.admin.port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            text = await response.text()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert names >= FAMILIES
        found = samples(text)
        ch = {"channel": "dt", "platform": "dingtalk"}
        assert value(found, "channeld_messages_received_total", **ch) == 4  # three + one redelivery
        assert value(found, "channeld_messages_duplicate_total", **ch) == 1
        assert value(found, "channeld_frames_dropped_total", reason="unreadable", **ch) == 1
        assert value(found, "channeld_frames_dropped_total", reason="unstorable", **ch) == 0
        assert value(found, "channeld_replies_total", outcome="replied", **ch) == 3
        assert value(found, "channeld_ack_latency_seconds_count", **ch) == 4
        assert value(found, "channeld_reply_first_update_seconds_count", **ch) == 3
        assert value(found, "channeld_llm_request_seconds_count", agent="default") == 3
        assert value(found, "channeld_llm_tokens_total", agent="default", kind="completion") > 0
        assert value(found, "channeld_channel_reconnects_total", **ch) == 1
        assert value(found, "channeld_channel_up", **ch) == 1
        assert value(found, "channeld_channel_state", state="connected", **ch) == 1
        assert value(found, "channeld_channel_state", state="failed", **ch) == 0
        assert value(found, "channeld_channel_last_event_timestamp_seconds", **ch) > 1.7e9
        streamed = value(
            found, "channeld_platform_requests_total", endpoint="card.streaming", status="200", **ch
        )
        calls = await dingtalk_emulator.calls("/v1.0/card/streaming")
        assert streamed == len([c for c in calls if c.status == 200])
    finally:
        await stack.stop()
