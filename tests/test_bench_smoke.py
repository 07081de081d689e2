"""The benchmark harness' pure parts, and the one coupling it has to tools.fake_llm internals.

The benchmarks themselves run with `make bench`, never in the test suite.
"""

from __future__ import annotations

import io
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import EmulatorThread
from channels.easemob.config import EasemobChannelConfig
from channels.model import ChannelId, ChatType
from channels.voice.emulator import VoiceEmulatorThread
from channels.wukongim.api import text_payload
from channels.wukongim.config import WuKongIMChannelConfig
from channels.wukongim.convert import to_batch
from channels.zim.config import ZimChannelConfig
from daemon.config import Settings
from tests import dingtalk_support
from tests.dingtalk_support import DINGTALK_CLIENT_ID, RawStreamClient
from tools.bench import (
    ack_server,
    callbacks,
    e2e,
    easemob,
    edited,
    measure,
    stats,
    voice,
    wukongim,
    zim,
)
from tools.bench import config as cfg
from tools.bench.coalesce import analyse
from tools.bench.llm import TracingLLM
from tools.bench.probe import EmulatorClient
from tools.bench.procs import OutsideLoad, Processes
from tools.bench.report import render_markdown
from tools.bench.report_voice import (
    TARGETS,
    Said,
    summarize,
    timings,
    voice_goal,
    voice_section,
)
from tools.bench.webhooks import receipts

dingtalk_emulator = dingtalk_support.dingtalk_emulator  # the shared fixture, by name

RESULTS_HEAD: dict[str, Any] = {  # what every results dictionary starts with
    "started": "2026-01-01T00:00:00+00:00",
    "quick": True,
    "machine": {
        "nproc": 2,
        "cpu_model": "Test CPU",
        "architecture": "x86_64",
        "memory_gb": 8,
        "kernel": "6.0",
        "python": "3.11.7",
    },
    "clock": {"implementation": "clock_gettime(CLOCK_MONOTONIC)", "shared": True},
}


def test_percentile_interpolates_between_ranks() -> None:
    assert stats.percentile([], 50) is None
    assert stats.percentile([3.0], 99) == 3.0
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile(range(101), 99) == pytest.approx(99.0)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        stats.percentile([1.0], 101)


def test_histogram_quantile_matches_prometheus() -> None:
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert stats.histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert stats.histogram_quantile(0.9, buckets) == pytest.approx(0.1)
    assert stats.histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.9)
    assert stats.histogram_quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    overflow = {0.1: 1.0, math.inf: 10.0}
    assert stats.histogram_quantile(0.99, overflow) == 0.1


def test_raw_samples_and_scrapes_become_the_same_histogram() -> None:
    samples = [0.0005, 0.002, 0.02, 3.0]
    buckets = stats.to_buckets(samples, (0.001, 0.005, 0.05))
    assert buckets == {0.001: 1.0, 0.005: 2.0, 0.05: 3.0, math.inf: 4.0}
    before = {0.001: 1.0, math.inf: 2.0}
    after = {0.001: 4.0, math.inf: 9.0}
    assert stats.bucket_delta(before, after) == {0.001: 3.0, math.inf: 7.0}


def test_ratio_and_rates() -> None:
    assert stats.ratio(2.0, 4.0) == 0.5
    assert stats.ratio(None, 4.0) is None
    assert stats.ratio(1.0, 0.0) is None
    assert stats.per_second([0.1, 0.2, 1.5, 2.99, 3.0], 0.0, 3.0) == [2, 1, 1]
    assert stats.max_in_window([0.0, 0.5, 0.9, 1.2, 5.0]) == 3
    assert stats.steady_rate([i / 100 for i in range(1000)]) == pytest.approx(100, rel=0.01)


def test_needed_burst_is_the_token_bucket_conformance() -> None:
    burst_then_steady = [0.0] * 5 + [1 + i / 10 for i in range(20)]
    assert stats.needed_burst(burst_then_steady, 10.0) == pytest.approx(5.0)
    assert stats.needed_burst([i / 10 for i in range(50)], 10.0) == pytest.approx(1.0)


def test_sustained_rate_stops_at_the_first_degraded_step() -> None:
    def step(rate: float, p50: float, answered: float = 1.0) -> dict[str, float | None]:
        return {"offered": rate, "answered": answered, "throughput": rate, "reply_p50": p50}

    assert stats.sustained_rate([step(10, 1.0), step(50, 1.1), step(100, 2.5)]) == 50
    assert stats.sustained_rate([step(10, 1.0), step(50, 1.0, answered=0.9)]) == 10
    assert stats.sustained_rate([step(10, 1.0)]) == 10
    assert stats.sustained_rate([]) is None


def test_generated_config_for_many_channels_is_valid() -> None:
    ids = cfg.app_ids("sc", 1000)
    assert ids[0] == "sc-0000" and ids[-1] == "sc-0999" and len(set(ids)) == 1000
    text = cfg.daemon_config(
        state_dir=Path("/tmp/bench-state"),
        admin_listen="127.0.0.1:9999",
        api_base="http://127.0.0.1:1234",
        llm_url="http://127.0.0.1:5678/v1",
        client_ids=ids,
        card_updates_per_second=50.0,
    )
    settings = Settings.model_validate(tomllib.loads(text))
    settings.check_references()
    assert len(settings.channels) == 1000
    assert settings.channels[999].card_updates_per_second == 50.0
    first = settings.channels[0]
    assert isinstance(first, DingTalkChannelConfig)
    assert first.api_base == "http://127.0.0.1:1234"
    assert cfg.emulator_app_args(ids[:2]) == [
        "--app",
        f"sc-0000:{cfg.SECRET}",
        "--app",
        f"sc-0001:{cfg.SECRET}",
    ]


def _call(at: float, path: str, body: dict[str, Any], client_id: str = "cd-0") -> dict[str, Any]:
    return {"at": at, "path": path, "body": body, "status": 200, "client_id": client_id}


def test_replies_are_matched_to_frames_acks_cards_and_traces() -> None:
    t = measure.tag(1, 7)
    text = measure.user_text(1, 7, 4)
    assert text.startswith(t + " ") and len(text.split()) == 4
    track = {"outTrackId": "card-1"}
    calls = [
        _call(10.01, measure.CREATE_PATH, track),
        _call(10.32, measure.STREAM_PATH, {**track, "content": "Echo:"}),
        _call(10.70, measure.STREAM_PATH, {**track, "content": f"Echo: {t}", "isFinalize": True}),
        _call(10.71, "/v1.0/card/instances", track),
        _call(10.5, measure.STREAM_PATH, {"outTrackId": "other", "content": "x"}, "cd-9"),
    ]
    traces = measure.index_traces([{"user": text, "token_times": [10.3, 10.6]}])
    (reply,) = measure.collect_replies(
        {t: "frame-1"},
        {"frame-1": 10.0},
        {"frame-1": 10.002},
        calls,
        traces,
        client_ids={"cd-0"},
        cards=True,
    )
    assert reply.latency("ack_at") == pytest.approx(0.002)
    assert reply.latency("shown_at") == pytest.approx(0.01)
    assert reply.latency("first_text_at") == pytest.approx(0.32)
    assert reply.latency("final_at") == pytest.approx(0.70)
    assert reply.calls == 4
    assert measure.openapi_calls(calls, {"cd-0"})[measure.STREAM_PATH] == 2

    webhook = _call(10.9, measure.SESSION_PATH, {"markdown": {"text": f"Echo: {t}"}}, "sdk-0")
    (plain,) = measure.collect_replies(
        {t: "frame-1"}, {"frame-1": 10.0}, {}, [webhook], {}, client_ids={"sdk-0"}, cards=False
    )
    assert plain.latency("final_at") == pytest.approx(0.9) and plain.ack_at is None


def test_staleness_counts_from_token_to_the_update_that_showed_it() -> None:
    tokens = ["Echo:", " a", " b"]
    times = [1.0, 1.1, 1.2]
    updates = [(1.05, 5), (1.5, 9)]
    assert measure.staleness(times, tokens, updates) == pytest.approx([0.05, 0.4, 0.3])


def test_coalescing_analysis_and_report_render_from_synthetic_results() -> None:
    t = measure.tag(90, 0)
    calls = [
        _call(1.0 + i * 0.1, measure.STREAM_PATH, {"outTrackId": "c", "content": f"Echo: {t}"})
        for i in range(10)
    ]
    trace = {"tokens": ["Echo:", f" {t}"], "token_times": [0.95, 0.99]}
    co = analyse(calls, {t: trace}, "cd-0", budget=20.0)
    assert co["streams"] == 1 and co["within_budget"]
    assert co["staleness"]["p50"] == pytest.approx(0.03)
    co["finished"] = 1
    step = {
        "rate": 200.0,
        "sent": 10,
        "answered": 10,
        "throughput": 199.0,
        "ack": {"p50": 0.002, "p99": 0.008},
        "first_text": {"p50": 0.31, "p99": 0.4},
        "reply": {"p50": 0.9},
        "loop_lag": {"p99": 0.004},
        "cpu_per_1000": 12.0,
        "api_calls_per_reply": 5.0,
    }
    base = {**step, "ack": {"p50": 0.8, "p99": 0.9}, "api_calls_per_reply": 1.0}
    results = {
        **RESULTS_HEAD,
        "settings": {"reference_rate": 200.0, "first_token_delay": 0.3, "token_interval": 0.02}
        | {"words": 24},
        "load": {
            "steps": {"channeld": [step], "baseline": [base]},
            "sustained": {"channeld": 200.0, "baseline": 200.0},
            "burst": {"channeld": step, "baseline": base},
        },
        "scale": {
            "runs": [
                {
                    "channels": 1000,
                    "connected": 1000,
                    "time_to_first": 1.5,
                    "time_to_all": 9.0,
                    "rss_bytes": 200 * 1024 * 1024,
                    "rss_per_channel": 200 * 1024,
                    "idle_cpu_percent": 1.5,
                }
            ],
            "rss_marginal_per_channel": 100 * 1024,
        },
        "coalescing": co,
    }
    text = render_markdown(results, ["load.png"])
    assert "| ack latency p99 | 8.0 ms | 900.0 ms | 0.01× |" in text
    assert "| ack p99 < 10 ms at 200 msg/s (burst) | 8.0 ms | met |" in text
    assert "| 1000 channels < 250 MB RSS | 200.0 MB | met |" in text
    assert "| sustained throughput ≥ bare SDK | 200 vs 200 msg/s | met |" in text
    assert "| answered (before the drain deadline) | 10/10 | 10/10 |  |" in text
    assert "![load.png](load.png)" in text


async def test_tracing_llm_marks_line_up_with_the_tokens() -> None:
    llm = TracingLLM(first_token_delay=0.01, token_interval=0.001)
    await llm.start()
    try:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{llm.url}/chat/completions", json=body) as resp,
        ):
            payload = await resp.text()
    finally:
        await llm.stop()
    (trace,) = llm.traces
    assert trace.user == "a b c"
    assert trace.tokens == ["Echo:", " a", " b", " c"]
    assert len(trace.token_times) == len(trace.tokens)
    assert trace.token_times[0] - trace.started >= 0.01
    assert trace.token_times == sorted(trace.token_times) and trace.ended >= trace.token_times[-1]
    assert payload.count('"content"') == 1 + len(trace.tokens)


async def test_sent_frames_and_acks_give_the_ack_latency(dingtalk_emulator: EmulatorThread) -> None:
    bot = RawStreamClient(dingtalk_emulator.url)
    await bot.connect()
    try:
        async with aiohttp.ClientSession() as session:
            emu = EmulatorClient(session, dingtalk_emulator.url)
            sent = await emu.message(DINGTALK_CLIENT_ID, "hello", "user-1")
            await dingtalk_emulator.wait_for(lambda e: e.acks(sent["frame_message_id"]))
            frames = await emu.frames("/v1.0/im/bot/messages/get")
            acks = await emu.acks()
    finally:
        await bot.close()
    (frame,) = [f for f in frames if f["message_id"] == sent["frame_message_id"]]
    (ack,) = [a for a in acks if a["message_id"] == sent["frame_message_id"]]
    assert frame["client_id"] == DINGTALK_CLIENT_ID and frame["delivered"]
    assert 0 <= ack["at"] - frame["at"] < 5


def test_callback_bodies_are_messages_the_wukongim_provider_answers() -> None:
    items = json.loads(
        callbacks.notify_body(step=71, index=3, batch=10, rate=50.0, bot_uid="aibot", words=24)
    )
    batch = to_batch(ChannelId("wk"), items, "aibot")
    assert len(batch.messages) == 10 and batch.ignored == batch.malformed == 0
    first = batch.messages[0]
    assert first.chat_type is ChatType.DIRECT and int(first.message_id) > 2**53
    assert first.text.startswith(measure.tag(71, 30) + " ") and len(first.text.split()) == 24
    assert len({m.sender.platform_id for m in batch.messages}) == 10


def test_generated_wukongim_config_is_valid() -> None:
    text = cfg.wukongim_config(
        state_dir=Path("/tmp/bench-state"),
        admin_listen="127.0.0.1:9999",
        webhooks_listen="127.0.0.1:9998",
        api_base="http://127.0.0.1:1234",
        llm_url="http://127.0.0.1:5678/v1",
        channel_id="wk-bench",
        card_updates_per_second=200.0,
    )
    settings = Settings.model_validate(tomllib.loads(text))
    settings.check_references()
    (channel,) = settings.channels
    assert isinstance(channel, WuKongIMChannelConfig) and channel.bot_uid == cfg.WUKONGIM_BOT
    assert channel.card_updates_per_second == 200.0 and settings.webhooks.port == 9998


def test_wukongim_answers_are_timed_from_their_anchor_deltas_and_end() -> None:
    t, other = measure.tag(75, 0), measure.tag(75, 1)
    no = {"client_msg_no": "s1"}

    def event(at: float, kind: str, delta: str = "", status: int = 200) -> dict[str, Any]:
        body = {**no, "event_type": kind, "payload": {"kind": "text", "delta": delta}}
        return {"at": at, "path": wukongim.EVENT_PATH, "body": body, "status": status}

    plain = {"payload": text_payload(f"Echo: {other} w1"), "client_msg_no": "p1"}
    calls = [
        {"at": 10.01, "path": wukongim.SEND_PATH, "body": {**no, "is_stream": 1}, "status": 200},
        event(10.2, wukongim.DELTA, "x", status=400),  # refused: shows nothing
        event(10.31, wukongim.DELTA, "Echo:"),
        event(10.6, wukongim.DELTA, f" {t} w1"),
        event(10.7, "stream.close"),
        event(10.71, "stream.finish"),
        {"at": 10.9, "path": wukongim.SEND_PATH, "body": plain, "status": 200},
        {"at": 10.95, "path": "/_emulator/messages", "body": {}, "status": 200},
    ]
    pushes = [
        {"at": 9.0, "status": 500, "message_ids": ["m1"]},
        {"at": 10.0, "status": 200, "message_ids": ["m1", "m2"]},
        {"at": 11.0, "status": 200, "message_ids": ["m1"]},
    ]
    assert receipts(pushes) == {"m1": 10.0, "m2": 10.0}
    traces = {t: {"started": 10.02, "token_times": [10.3, 10.59]}}
    streamed, sent_plain = wukongim.collect_replies(
        {t: "m1", other: "m2"}, receipts(pushes), calls, traces
    )
    assert streamed.latency("shown_at") == pytest.approx(0.01)
    assert streamed.latency("llm_request_at") == pytest.approx(0.02)
    assert streamed.latency("first_text_at") == pytest.approx(0.31)
    assert streamed.latency("final_at") == pytest.approx(0.7)
    assert streamed.calls == 6
    assert (
        sent_plain.latency("first_text_at") == sent_plain.latency("final_at") == pytest.approx(0.9)
    )
    assert wukongim.finished_tags(calls) == {t, other}
    assert wukongim.finished_tags(calls[:5]) == set()  # closed, not yet finished
    assert wukongim.api_calls(calls) == {wukongim.SEND_PATH: 2, wukongim.EVENT_PATH: 5}


async def test_bare_handler_journals_each_message_once_and_answers_200(tmp_path: Path) -> None:
    conn = ack_server.open_journal(tmp_path / "journal.sqlite3")
    runner = web.AppRunner(ack_server.make_app(conn))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/wk?key=k&event=msg.notify"

    def body(index: int) -> bytes:
        return callbacks.notify_body(step=1, index=index, batch=2, rate=1, bot_uid="b", words=3)

    try:
        async with aiohttp.ClientSession() as session:
            shots = await callbacks.post_open_loop(session, url, rate=200, seconds=0.02, body=body)
            again = await callbacks.post_open_loop(session, url, rate=200, seconds=0.01, body=body)
            async with session.post(url, data=b"{") as resp:
                assert resp.status == 400
    finally:
        await runner.cleanup()
    summary = callbacks.summarize_shots(shots, batch=2)
    assert summary["callbacks"] == 4 and summary["messages"] == 8 and summary["not_ok"] == 0
    assert all(s.status == 200 for s in again) and summary["latency"]["max"] > 0
    rows = conn.execute("SELECT count(*) FROM journal").fetchone()
    assert rows == (8,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def _phase(p99: float, *, batch: int, inside: float | None = None) -> dict[str, Any]:
    latency = {"p50": p99 / 2, "p99": p99, "max": p99 * 1.1}
    phase: dict[str, Any] = {"callbacks": 250, "messages": 250 * batch, "batch": batch}
    phase |= {"not_ok": 0, "rate": 50.0}
    phase |= {"seconds": 5.0, "elapsed": 5.0, "cpu_seconds": 2.5, "latency": latency}
    if inside is not None:
        phase |= {"inside": {"p99": inside}, "answered": 250 * batch}
    return phase


def test_webhooks_section_renders_the_listener_and_wukongim_beside_dingtalk() -> None:
    dingtalk = {"rate": 10.0, "answered": 30, "sent": 30, "first_text": {"p50": 0.33}}
    wk = {**dingtalk, "first_text": {"p50": 0.31}, "push_delay": {"p50": 0.025}}
    budget = {"peak_per_second": 15, "rate_refusals": 0}
    zim_step = {**dingtalk, "first_text": {"p50": 1.2}, "budget": budget}
    presend = {"answer": {"p50": 0.005, "p99": 0.012, "max": 0.02}, "late": 0}
    em_step = {**dingtalk, "first_text": {"p50": 0.32}, "presend": presend}
    results = {
        **RESULTS_HEAD,
        "settings": {"reference_rate": 60.0, "first_token_delay": 0.3, "token_interval": 0.02}
        | {"words": 24, "step_seconds": 3.0, "burst_seconds": 1.0},
        "load": {
            "steps": {"channeld": [dingtalk], "baseline": []},
            "sustained": {"channeld": 10.0, "baseline": None},
            "burst": {"channeld": {**dingtalk, "rate": 60.0}},
        },
        "webhooks": {
            "callbacks": {
                "single": {
                    "channeld": _phase(0.03, batch=1, inside=0.028),
                    "baseline": _phase(0.003, batch=1),
                },
                "batch": {
                    "channeld": _phase(0.06, batch=10, inside=0.05),
                    "baseline": _phase(0.004, batch=10),
                },
            },
            "push_interval": 0.05,
            "updates_per_second": 200.0,
            "end_to_end": {"steady": wk, "burst": {**wk, "rate": 60.0}},
            "zim": {"steady": zim_step, "burst": {**zim_step, "rate": 60.0}, "qps": 20},
            "easemob": {"steady": em_step, "burst": {**em_step, "rate": 60.0}},
        },
    }
    text = render_markdown(results)
    goal = "| callback answer p99 < 50 ms at 50 callbacks/s | 30.0 ms (1 message each), 60.0 ms"
    assert goal + " (10 each) | not met |" in text
    assert "| answer latency p99 | 30.0 ms | 3.0 ms | 10.00× |" in text
    assert "| of which inside channeld p99 (histogram) | 28.0 ms | – |  |" in text
    assert (
        "| listener process CPU while the load lasted (% of one core) | 50 | 50 | 1.00× |" in text
    )
    assert "| the messages answered (by the LLM, through the emulator) | 2500/2500" in text
    header = "| figure (steady, 10 msg/s for 3 s) | DingTalk | WuKongIM | ZIM | Easemob |"
    assert header in text
    assert "| figure (burst, 60 msg/s for 1 s) | DingTalk | WuKongIM | ZIM | Easemob |" in text
    row = "| receipt → first visible text p50 | 330.0 ms | 310.0 ms | 1200.0 ms | 320.0 ms |"
    assert text.count(row) == 2
    assert "| user's message → webhook push / callback p50 | – | 25.0 ms | – | – |" in text
    assert "| ZIM: requests refused for rate (must be 0) | 0 | 0 |" in text
    assert "| Easemob: pre-send callback answer p99 | 12.0 ms | 12.0 ms |" in text


@pytest.mark.parametrize("make", [cfg.zim_config, cfg.easemob_config])
def test_generated_zim_and_easemob_configs_are_valid(make: Any) -> None:
    text = make(
        state_dir=Path("/tmp/bench-state"),
        admin_listen="127.0.0.1:9999",
        webhooks_listen="127.0.0.1:9998",
        api_base="http://127.0.0.1:1234",
        llm_url="http://127.0.0.1:5678/v1",
        channel_id="bench",
    )
    settings = Settings.model_validate(tomllib.loads(text))
    settings.check_references()
    (channel,) = settings.channels
    assert isinstance(channel, ZimChannelConfig | EasemobChannelConfig)
    assert channel.stream == "edit" and settings.webhooks.port == 9998


def _zim_call(at: float, action: str, body: dict[str, Any], code: int = 0) -> dict[str, Any]:
    return {"at": at, "path": "/", "action": action, "code": code, "body": body}


def test_zim_answers_are_timed_from_the_send_and_the_edit_with_the_whole_text() -> None:
    t, other = measure.tag(61, 0), measure.tag(61, 1)
    whole = f"Echo: {t} w1 w2"

    def send(at: float, user: str, text: str, code: int = 0) -> dict[str, Any]:
        body = {"FromUserId": "@RBT#b", "ToUserId": [user], "MessageBody": {"Message": text}}
        return _zim_call(at, zim.SEND, body, code)

    def edit(at: float, user: str, seq: int, text: str, code: int = 0) -> dict[str, Any]:
        body = {"ConvId": user, "ConvMsgSeq": seq, "MessageBody": {"Message": text}}
        return _zim_call(at, zim.EDIT, body, code)

    calls = [
        send(10.0, "u2", "refused", code=7),  # no message stored: not linked to a card
        send(10.3, "u1", "Echo:"),  # the tag is not in the first text: linked by order
        send(10.35, "u2", f"Echo: {other} w1"),
        edit(10.5, "u1", 2, f"Echo: {t} w1"),
        edit(10.6, "u1", 2, whole, code=7),  # refused: the whole text not yet visible
        edit(10.9, "u1", 2, whole),
        {"at": 11.0, "path": "/_emulator/messages", "body": {}},
    ]
    cards = zim.robot_cards(
        [
            {"sender": "@RBT#b", "receiver": "u1", "msg_seq": 2, "texts": ["Echo:", whole]},
            {"sender": "@RBT#b", "receiver": "u2", "msg_seq": 2, "texts": [f"Echo: {other} w1"]},
            {"sender": "u1", "receiver": "@RBT#b", "msg_seq": 1, "texts": [t]},  # the user's
        ],
        "@RBT#b",
    )
    assert len(cards) == 2
    traces: dict[str, dict[str, Any]] = {
        t: {"started": 10.05, "token_times": [10.29, 10.8], "tokens": ["Echo:", f" {t}", " w1 w2"]},
        other: {"tokens": ["Echo:", f" {other}", " w1", " w9"]},  # never shown whole
    }
    mine, theirs = edited.collect_replies(
        {t: "m1", other: "m2"}, {"m1": 10.0, "m2": 10.1}, zim.message_calls(calls), cards, traces
    )
    assert mine.latency("first_text_at") == mine.latency("shown_at") == pytest.approx(0.3)
    assert mine.latency("final_at") == pytest.approx(0.9) and mine.calls == 4
    assert theirs.latency("first_text_at") == pytest.approx(0.25) and theirs.final_at is None
    answers = edited.full_answers(traces)
    assert edited.finished_tags(zim.message_calls(calls), answers) == {t}
    assert zim.api_calls(calls) == {zim.SEND: 3, zim.EDIT: 3}
    accepted = [c for c in calls if c.get("code") == 0]
    figures = zim.budget(accepted, [{"action": zim.EDIT, "at": 10.6}])
    assert figures == {
        "peak_per_second": 4,
        "rate_refusals": 1,
        "refused_actions": {zim.EDIT: 1},
    }


def test_peak_per_window_counts_a_sliding_second() -> None:
    assert edited.peak_per_window([]) == 0
    assert edited.peak_per_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert edited.peak_per_window([0.0, 1.0, 2.0]) == 1


def test_easemob_sends_rewrites_and_presend_answers() -> None:
    t = measure.tag(66, 0)
    rewrite = "/bench/bench/messages/rewrite/{}"

    def send(at: float, text: str, status: int = 200) -> dict[str, Any]:
        body = {"from": "aibot", "to": ["u1"], "type": "txt", "body": {"msg": text}}
        return {
            "at": at,
            "method": "POST",
            "path": easemob.SEND_PATH,
            "body": body,
            "status": status,
        }

    def rewritten(at: float, msg_id: str, text: str, status: int = 200) -> dict[str, Any]:
        body = {"new_msg": {"type": "txt", "msg": text}}
        path = rewrite.format(msg_id)
        return {"at": at, "method": "PUT", "path": path, "body": body, "status": status}

    calls = [
        send(5.0, "other", status=429),
        send(5.3, f"Echo: {t}"),
        rewritten(5.6, "900", f"Echo: {t} w1", status=403),
        rewritten(5.8, "900", f"Echo: {t} w1"),
        {"at": 5.9, "method": "POST", "path": "/bench/bench/token", "body": {}, "status": 200},
    ]
    cards = easemob.bot_cards(
        [
            {"msg_id": "900", "chat_id": "aibot|u1", "sender": "aibot", "texts": [f"Echo: {t}"]},
            {"msg_id": "901", "chat_id": "aibot|u1", "sender": "u1", "texts": ["x"]},
        ],
        "aibot",
    )
    assert cards == [edited.Card("u1", "900", 900, (f"Echo: {t}",))]
    traces = {t: {"tokens": ["Echo:", f" {t}", " w1"]}}
    (reply,) = edited.collect_replies(
        {t: "m1"}, {"m1": 5.0}, easemob.message_calls(calls), cards, traces
    )
    assert reply.latency("first_text_at") == pytest.approx(0.3)
    assert reply.latency("final_at") == pytest.approx(0.8)
    figures = easemob.rewrite_figures(easemob.message_calls(calls), [429, 200, 403, 200])
    assert figures == {"per_message_max": 1, "refused": 1, "too_many_requests": 1}
    presends = [
        {"msg_id": "m1", "answered_after": 0.004, "in_time": True, "verdict": "pass"},
        {"msg_id": "m2", "answered_after": 0.25, "in_time": False, "verdict": "pass"},
        {"msg_id": "other", "answered_after": 9.0, "in_time": False, "verdict": "pass"},
    ]
    summary = easemob.presend_figures(presends, {"m1", "m2"})
    assert summary["count"] == 2 and summary["late"] == 1 and summary["blocked"] == 0
    assert summary["answer"]["max"] == pytest.approx(0.25)


def test_trace_file_is_read_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    traces = e2e.TraceFile(path)
    assert traces.update() == {}
    first = json.dumps({"user": measure.user_text(1, 0, 3), "tokens": ["a"]})
    second = json.dumps({"user": measure.user_text(1, 1, 3), "tokens": ["b"]})
    path.write_text(first + "\n" + second[:10])  # the second line is still being written
    assert set(traces.update()) == {measure.tag(1, 0)}
    with path.open("a") as handle:
        handle.write(second[10:] + "\n")
    assert set(traces.update()) == {measure.tag(1, 0), measure.tag(1, 1)}


def test_generated_voice_config_offers_zego_calls_on_a_zim_channel() -> None:
    text = voice.daemon_config(
        state_dir=Path("/tmp/bench-state"),
        admin_listen="127.0.0.1:9999",
        webhooks_listen="127.0.0.1:9998",
        zim_api="http://127.0.0.1:1234",
        voice_api="http://127.0.0.1:4321",
        llm_url="http://127.0.0.1:5678/v1",
    )
    settings = Settings.model_validate(tomllib.loads(text))
    settings.check_references()
    (channel,) = settings.channels
    assert isinstance(channel, ZimChannelConfig) and channel.id == voice.CHANNEL
    assert channel.voice is not None and channel.voice.zego is not None
    assert channel.voice.zego.app_id == voice.VOICE_APP_ID
    assert channel.voice.zego.api_base == "http://127.0.0.1:4321"
    assert channel.voice.endpoint_url(voice.CHANNEL).startswith("http://127.0.0.1:9998/voice/")
    assert settings.webhooks.port == 9998


def _said(target: str, shape: str, index: int, first: float | None, **kw: Any) -> Said:
    t = measure.tag(voice.SINGLE_STEP, index)
    return Said(target, shape, t, kw.pop("posted", 10.0), first, kw.pop("status", 200), **kw)


def test_voice_rounds_are_timed_against_the_llm_trace() -> None:
    said = [
        _said("channeld", "single", 0, 0.215),
        _said("channeld", "single", 1, 0.209),
        _said("channeld", "single", 2, None, status=401, error="HTTP 401: unauthorized"),
        _said("channeld", "single", 3, 0.240),  # its trace never came: answered, not timed
        _said("baseline", "single", 4, 0.2015),
    ]
    traces: dict[str, dict[str, Any]] = {
        measure.tag(voice.SINGLE_STEP, 0): {"started": 10.010, "token_times": [10.211, 10.23]},
        measure.tag(voice.SINGLE_STEP, 1): {"started": 10.025, "token_times": [10.226]},
        measure.tag(voice.SINGLE_STEP, 4): {"started": 10.001, "token_times": [10.2012]},
    }
    first = timings(said[0], traces[said[0].tag])
    assert first == pytest.approx(
        {
            "first_chunk": 0.215,
            "llm_first_token": 0.201,
            "overhead": 0.014,
            "before_llm": 0.010,
            "after_token": 0.004,
        }
    )
    assert timings(said[2], None) is None and timings(said[0], {"started": 1}) is None
    result = summarize(said, traces)
    ours, base = result["channeld"]["single"], result["baseline"]["single"]
    assert (ours["rounds"], ours["answered"], ours["timed"]) == (4, 3, 2)
    assert ours["errors"] == ["HTTP 401: unauthorized"]
    assert ours["overhead"]["max"] == pytest.approx(0.014)
    assert ours["first_chunk"]["p50"] == pytest.approx(0.212)
    assert base["overhead"]["p50"] == pytest.approx(0.0013)
    assert result["channeld"]["concurrent"]["timed"] == 0
    assert result["channeld"]["concurrent"]["overhead"]["p50"] is None


def _figures(first: float, overhead: float, before: float) -> dict[str, Any]:
    def q(value: float) -> dict[str, float]:
        return {"p50": value, "p95": value + 0.002, "max": value + 0.005}

    return {
        "rounds": 10,
        "answered": 10,
        "errors": [],
        "first_chunk": q(first),
        "overhead": q(overhead),
        "before_llm": q(before),
        "after_token": q(overhead - before),
        "llm_first_token": q(first - overhead),
    }


def _voice_results() -> dict[str, Any]:
    return {
        "settings": {"first_token_delay": 0.2, "token_interval": 0.02, "calls": 10}
        | {"single_rounds": 10, "concurrent_rounds": 2, "staggered_rounds": 3}
        | {"stagger_window": 1.0, "stagger_seed": 14},
        "outside_cpu_percent": {"single": 12.0, "concurrent": 30.0, "staggered": 20.0},
        "targets": {
            "channeld": {
                "single": _figures(0.208, 0.007, 0.006),
                "concurrent": _figures(0.240, 0.039, 0.035),
                "staggered": _figures(0.211, 0.010, 0.008),
            },
            "baseline": {
                "single": _figures(0.201, 0.001, 0.002),
                "concurrent": _figures(0.203, 0.002, 0.003),
                "staggered": _figures(0.2015, 0.0015, 0.0025),
            },
        },
    }


def test_voice_section_puts_channeld_beside_the_floor() -> None:
    results = _voice_results()
    text = "\n".join(voice_section(results))
    goal = (
        "| first SSE chunk p95 ≤ LLM first token + 10 ms | first token + 9.0 ms (1 call),"
        " + 41.0 ms (10 calls at once), + 12.0 ms (10 calls staggered over 1 s)"
    )
    assert goal + " | not met: 10 calls at once, 10 calls staggered over 1 s |" in text
    header = (
        "| figure | 1 call, 10 rounds | 10 calls at once, 2 rounds"
        " | 10 calls staggered over 1 s, 3 rounds |"
    )
    assert header in text
    first = "| first SSE chunk, channeld p50 / p95 / max | 208.0 / 210.0 / 213.0 ms |"
    assert first + " 240.0 / 242.0 / 245.0 ms | 211.0 / 213.0 / 216.0 ms |" in text
    floor = "| first SSE chunk, floor (agent → LLM) p50 / p95 / max | 201.0 / 203.0 / 206.0 ms |"
    assert floor in text and "| 201.5 / 203.5 / 206.5 ms |" in text
    difference = "| channeld − floor, p50 / p95 | +7.0 / +7.0 ms | +37.0 / +37.0 ms |"
    assert difference + " +9.5 / +9.5 ms |" in text
    overhead = "| channeld: first chunk − the LLM's first-token time, p50 / p95 / max |"
    assert (
        overhead + " 7.0 / 9.0 / 12.0 ms | 39.0 / 41.0 / 44.0 ms | 10.0 / 12.0 / 15.0 ms |" in text
    )
    before = (
        "| of which until the LLM has the request: channeld − floor, p50 | +4.0 ms | +32.0 ms |"
    )
    assert before + " +5.5 ms |" in text
    after = "| of which from the LLM's first token to the chunk: channeld − floor, p50 |"
    assert after + " +2.0 ms | +5.0 ms | +3.0 ms |" in text
    answered = "| rounds answered: channeld, floor | 10/10, 10/10 | 10/10, 10/10 | 10/10, 10/10 |"
    assert answered in text
    assert "| CPU of other processes meanwhile (% of one core) | 12 | 30 | 20 |" in text
    assert "every call staggered" in text  # the method says how the moments are drawn


def test_voice_goal_names_the_shapes_that_miss_it() -> None:
    results = _voice_results()
    ours = results["targets"]["channeld"]
    ours["staggered"] = _figures(0.210, 0.007, 0.006)
    assert voice_goal(results)[-1] == "not met: 10 calls at once"
    ours["concurrent"] = _figures(0.208, 0.008, 0.006)
    assert voice_goal(results)[-1] == "met"
    for shape in ours:
        ours[shape] = _figures(0.240, 0.039, 0.035)
    assert voice_goal(results)[-1] == "not met"
    for shape in ours:
        ours[shape] = {"rounds": 0, "answered": 0, "errors": []}
    assert voice_goal(results)[1:] == [
        "first token + – (1 call), + – (10 calls at once), + – (10 calls staggered over 1 s)",
        "–",
    ]


def test_voice_results_from_before_the_staggered_shape_still_render() -> None:
    results = _voice_results()
    for key in ("staggered_rounds", "stagger_window", "stagger_seed"):
        del results["settings"][key]
    del results["outside_cpu_percent"]["staggered"]
    for target in results["targets"].values():
        del target["staggered"]
    text = "\n".join(voice_section(results))
    assert (
        "| figure | 1 call, 10 rounds | 10 calls at once, 2 rounds | 10 calls staggered |" in text
    )
    assert "| rounds answered: channeld, floor | 10/10, 10/10 | 10/10, 10/10 | –, – |" in text
    assert "| CPU of other processes meanwhile (% of one core) | 12 | 30 | – |" in text
    assert voice_goal(results)[-1] == "not met: 10 calls at once"


def test_staggered_moments_are_seeded_and_within_the_window() -> None:
    moments = voice.stagger(14, 3, 10, 1.0)
    assert moments == voice.stagger(14, 3, 10, 1.0)  # every run alike
    assert moments != voice.stagger(15, 3, 10, 1.0)
    assert len(moments) == 3 and all(len(r) == 10 for r in moments)
    assert all(0 <= m <= 1.0 for r in moments for m in r)
    assert len({m for r in moments for m in r}) == 30  # no two callers in the same instant
    assert max(m for r in moments for m in r) - min(m for r in moments for m in r) > 0.5


def test_the_voice_plan_staggers_every_call_after_the_same_shapes_as_before() -> None:
    settings = voice.VoiceSettings.for_run(quick=True)
    shapes = {shape.name: shape for shape in voice.plan(settings)}
    assert list(shapes) == ["warmup", "single", "concurrent", "staggered"]
    assert [len(s.moments) for s in shapes.values()] == [1, 12, 4, 3]
    assert [s.calls for s in shapes.values()] == [10, 1, 10, 10]
    assert len({s.step for s in shapes.values()}) == 4  # each shape's tags its own
    assert all(
        m == 0
        for name in ("warmup", "single", "concurrent")
        for r in shapes[name].moments
        for m in r
    )
    staggered = shapes["staggered"]
    assert staggered.moments == voice.stagger(14, 3, 10, 1.0)
    # the quick run's staggered rounds wait about this long for their callers: ~1 s a round each
    assert sum(max(r) for r in staggered.moments) * len(TARGETS) < 7
    assert len(voice.plan(voice.VoiceSettings())[-1].moments) == 10


async def test_voice_rounds_speak_at_each_rounds_moments_for_both_targets(tmp_path: Path) -> None:
    llm = TracingLLM(first_token_delay=0.005, token_interval=0.001)
    await llm.start()
    settings = voice.VoiceSettings(
        calls=3, single_rounds=1, concurrent_rounds=1, staggered_rounds=2, stagger_window=0.3
    )
    (moments,) = [s.moments for s in voice.plan(settings) if s.name == "staggered"]
    try:
        async with (
            VoiceEmulatorThread(
                "zego",
                [voice.BASELINE_AGENT],
                app_id=str(voice.VOICE_APP_ID),
                server_secret=voice.VOICE_SECRET,
            ) as cloud,
            aiohttp.ClientSession() as session,
        ):
            made = [await voice.baseline_instance(session, cloud.url, n, llm.url) for n in range(6)]
            instances = {"channeld": made[:3], "baseline": made[3:]}
            said, busy = await voice.rounds(
                EmulatorClient(session, cloud.url),
                instances,
                settings,
                OutsideLoad(Processes(tmp_path)),
            )
    finally:
        await llm.stop()
    assert set(busy) == {"single", "concurrent", "staggered"}
    assert all(s.ok for s in said)
    counts = {(s.target, s.shape): 0 for s in said}
    for s in said:
        counts[s.target, s.shape] += 1
    assert counts == {
        (t, shape): n
        for t in TARGETS
        for shape, n in [("single", 1), ("concurrent", 3), ("staggered", 6)]
    }
    staggered = [s for s in said if s.shape == "staggered"]
    assert all(s.tag.startswith(f"bm{voice.STAGGERED_STEP}n") for s in staggered)
    # each target's round, its calls in order: they spoke in the order of the round's moments
    for number in range(4):
        group = staggered[3 * number : 3 * number + 3]
        spoke = sorted(range(3), key=lambda k: group[k].posted)
        due = sorted(range(3), key=lambda k: moments[number // 2][k])
        assert spoke == due, (number, [s.posted for s in group], moments[number // 2])
    assert {s.target for s in staggered[:6]} == set(TARGETS)  # a round: both targets, in turn


async def test_the_voice_llm_sends_its_first_chunk_with_its_first_token() -> None:
    delay = 0.05
    sink = io.StringIO()
    ours = voice.FirstTokenFirstLLM(sink, first_token_delay=delay, token_interval=0.001)
    stock = TracingLLM(first_token_delay=delay, token_interval=0.001)
    await ours.start()
    await stock.start()
    try:
        async with (
            VoiceEmulatorThread(
                "zego",
                [voice.BASELINE_AGENT],
                app_id=str(voice.VOICE_APP_ID),
                server_secret=voice.VOICE_SECRET,
            ) as cloud,
            aiohttp.ClientSession() as session,
        ):
            mine = await voice.baseline_instance(session, cloud.url, 0, ours.url)
            theirs = await voice.baseline_instance(session, cloud.url, 1, stock.url)
            text = measure.user_text(voice.SINGLE_STEP, 0, 4)
            said = await cloud.say(text, instance_id=mine)
            early = await cloud.say("hello", instance_id=theirs)
            (request,) = await cloud.llm_requests(mine)
    finally:
        await ours.stop()
        await stock.stop()
    assert said["status"] == 200 and said["answer"] == f"Echo: {text}"
    assert said["first_chunk_ms"] >= delay * 1000
    # the stock fake LLM's empty role chunk leaves at once: an agent would take it for the first
    assert early["status"] == 200 and early["first_chunk_ms"] < delay * 1000
    assert request.body["agent_info"]["agent_instance_id"] == mine
    assert request.body["messages"][-1] == {"role": "user", "content": text}
    (line,) = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert line["user"] == text and len(line["token_times"]) == len(line["tokens"]) == 5
    assert line["token_times"][0] - line["started"] >= delay
    assert line["started"] >= ours.requests[0].at  # from the whole request, not its headers
