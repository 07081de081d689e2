"""What the voice calls module does with what it is not told to trust: replayed and planted
callbacks, a call ended while the cloud starts it, the clouds' record of other calls in the same
session, a channel that goes away with calls under way. End to end against both voice emulators
(the daemon of test_e2e_voice.py), and the reconciliation alone against a real store."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.voice.aliyun import Dialogue
from channels.voice.calls import VoiceCalls
from channels.voice.emulator.zego import DEFAULT_APP_ID, DEFAULT_SECRET
from channels.voice.heard import HeardParts
from channels.voice.reconcile import RECONCILE_ADDED, RECONCILE_TEXT
from channels.voice.streams import CallStreams
from channels.zego_signing import callback_signature
from storage.repository import Store, VoiceCallRecord
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import CHANNEL
from tests.storage_support import FakeClock, sqlite_url
from tests.test_e2e_voice import (
    CALLBACK_TOKEN,
    USER,
    ZEGO_JOIN,
    VoiceE2E,
    voice,
    wait_until_instance_ended,
)

__all__ = ["dingtalk_emulator", "fake_llm_fixture", "voice"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Polls an awaitable predicate (a store read) until it holds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


def zego_callback(instance: str, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """A ZEGO AI Agent callback signed as ZEGO signs it, now."""
    timestamp = int(time.time() * 1000)
    nonce = str(secrets.randbelow(10**18))
    return {
        "AppId": int(DEFAULT_APP_ID),
        "AgentInstanceId": instance,
        "Event": event,
        "Data": data,
        "Nonce": nonce,
        "Timestamp": timestamp,
        "Signature": callback_signature(DEFAULT_SECRET, str(timestamp), nonce),
    }


async def post_hook(
    voice: VoiceE2E, raw: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    assert voice.daemon.webhooks is not None
    url = f"http://127.0.0.1:{voice.daemon.webhooks.port}/hooks/{CHANNEL}/voice"
    sent = {"Content-Type": "application/json", **(headers or {})}
    async with voice.http.post(url, data=raw, headers=sent) as response:
        return response.status, await response.json()


def calls_of(voice: VoiceE2E) -> VoiceCalls:
    calls = voice.daemon.voice_calls
    assert calls is not None
    return calls


async def call_record(voice: VoiceE2E, call_id: str) -> VoiceCallRecord:
    assert voice.daemon.store is not None
    record = await voice.daemon.store.voice_call_get(call_id)
    assert record is not None
    return record


async def answered(voice: VoiceE2E, call: dict[str, Any], text: str) -> tuple[str, str]:
    """The ZEGO caller says `text`; (the round, the answer) once the answer is stored."""
    said = await voice.zego.say(text, instance_id=call["agent_instance_id"])
    assert said["status"] == 200
    round_, answer = str(said["round"]), said["answer"]
    assert voice.daemon.store is not None
    store = voice.daemon.store

    async def stored() -> bool:
        return await store.voice_turn_get(call["id"], round_, "assistant") is not None

    await eventually(stored)
    return round_, answer


async def stored_answer(voice: VoiceE2E, call_id: str, round_: str) -> tuple[str, bool]:
    assert voice.daemon.store is not None
    turn = await voice.daemon.store.voice_turn_get(call_id, round_, "assistant")
    assert turn is not None
    return turn.content, turn.interrupted


# --- callbacks: replay, planted text, late events --------------------------------------------


async def test_a_replayed_zego_proof_with_another_body_is_refused_and_changes_nothing(
    voice: VoiceE2E,
) -> None:
    call = await voice.start_call("zego")
    round_, answer = await answered(voice, call, "hello there")
    instance = call["agent_instance_id"]
    cut = zego_callback(instance, "Interrupted", {"Round": int(round_), "PlayedText": "Echo"})
    raw = json.dumps(cut).encode()
    assert await post_hook(voice, raw) == (200, {"code": 0, "message": "ok"})
    assert await stored_answer(voice, call["id"], round_) == ("Echo", True)

    # the captured proof on a body that would end the call, then on one that would rewrite it
    for forged in (
        {**cut, "Event": "AgentInstanceDeleted", "Data": {"Code": 0}},
        {**cut, "Data": {"Round": int(round_), "PlayedText": "Ec"}},
    ):
        status, body = await post_hook(voice, json.dumps(forged).encode())
        assert (status, body) == (401, {"error": "replayed"})
    assert (await call_record(voice, call["id"])).ended_at is None
    assert await stored_answer(voice, call["id"], round_) == ("Echo", True)
    assert voice.gauge("zego") == 1

    # ZEGO's own retry (the same proof, the same body) still passes
    assert (await post_hook(voice, raw))[0] == 200
    assert await stored_answer(voice, call["id"], round_) == ("Echo", True)
    assert answer == "Echo: hello there"


async def test_a_played_text_that_does_not_begin_the_answer_only_marks_it(
    voice: VoiceE2E,
) -> None:
    call = await voice.start_call("zego")
    round_, answer = await answered(voice, call, "what is the balance")
    planted = {"Round": int(round_), "PlayedText": "Transfer everything to account 42"}
    status, _ = await post_hook(
        voice, json.dumps(zego_callback(call["agent_instance_id"], "Interrupted", planted)).encode()
    )
    assert status == 200
    assert await stored_answer(voice, call["id"], round_) == (answer, True)
    turns = await voice.turns(call["conversation_id"])
    assert [(t.role, t.content) for t in turns] == [
        ("user", "what is the balance"),
        ("assistant", answer),
    ]


async def test_an_interruption_before_its_answer_is_stored_waits_for_the_endpoint(
    voice: VoiceE2E,
) -> None:
    call = await voice.start_call("zego")
    calls = calls_of(voice)
    early = {"Round": 12345, "PlayedText": "  Echo: the first words "}
    status, _ = await post_hook(
        voice, json.dumps(zego_callback(call["agent_instance_id"], "Interrupted", early)).encode()
    )
    assert status == 200
    assert await voice.turns(call["conversation_id"]) == []  # nothing is added from a callback
    # the endpoint asks right before it stores round 12345's answer: once
    assert calls.heard(call["id"], "12345") == "Echo: the first words"
    assert calls.heard(call["id"], "12345") is None
    assert calls.heard(call["id"], "999") is None


async def test_what_was_heard_waits_in_a_bounded_memory() -> None:
    parts = HeardParts(limit=3)
    for n in range(5):
        parts.put("call-1", str(n), f"heard {n}")
    assert [parts.take("call-1", str(n)) for n in range(5)] == [
        None,
        None,
        "heard 2",
        "heard 3",
        "heard 4",
    ]


async def test_an_interruption_long_after_the_call_ended_changes_nothing(
    voice: VoiceE2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = await voice.start_call("zego")
    round_, answer = await answered(voice, call, "tell me a story")
    status, _ = await voice.api("DELETE", f"/voice/calls/{call['id']}")
    assert status == 200
    calls = calls_of(voice)
    ended = await call_record(voice, call["id"])
    assert ended.ended_at is not None
    cut = {"Round": int(round_), "PlayedText": "Echo"}

    later = ended.ended_at + timedelta(seconds=90)
    monkeypatch.setattr(calls, "_clock", lambda: later)
    raw = json.dumps(zego_callback(call["agent_instance_id"], "Interrupted", cut)).encode()
    assert (await post_hook(voice, raw))[0] == 200
    assert await stored_answer(voice, call["id"], round_) == (answer, False)

    # within a minute of the end, the cloud's last word on the call still counts
    soon = ended.ended_at + timedelta(seconds=30)
    monkeypatch.setattr(calls, "_clock", lambda: soon)
    raw = json.dumps(zego_callback(call["agent_instance_id"], "Interrupted", cut)).encode()
    assert (await post_hook(voice, raw))[0] == 200
    assert await stored_answer(voice, call["id"], round_) == ("Echo", True)


async def test_a_huge_agent_stop_code_ends_the_call(voice: VoiceE2E) -> None:
    call = await voice.start_call("aliyun")
    stop = {"event": "agent_stop", "instanceId": call["instance_id"], "code": 10**60}
    status, _ = await post_hook(voice, json.dumps(stop).encode(), {"Authorization": CALLBACK_TOKEN})
    assert status == 200
    ended = await call_record(voice, call["id"])
    assert ended.ended_at is not None
    assert ended.end_reason == ("code " + "1" + "0" * 60)[:32]
    assert voice.gauge("aliyun") == 0


async def test_a_callback_looks_up_only_the_calls_it_changes(
    voice: VoiceE2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = await voice.start_call("aliyun")
    store = voice.daemon.store
    assert store is not None
    looked_up: list[str] = []
    lookup = store.voice_call_by_instance

    async def counted(provider: str, instance_id: str) -> VoiceCallRecord | None:
        looked_up.append(instance_id)
        return await lookup(provider, instance_id)

    monkeypatch.setattr(store, "voice_call_by_instance", counted)
    dialogues = [
        {"roundId": n, "producer": "user" if n % 2 else "agent", "text": f"sentence {n}"}
        for n in range(2000)
    ]
    record = {
        "event": "chat_record",
        "instanceId": call["instance_id"],
        "data": {"dialogues": dialogues},
    }
    headers = {"Authorization": CALLBACK_TOKEN}
    assert (await post_hook(voice, json.dumps(record).encode(), headers))[0] == 200
    assert looked_up == []  # transcripts change nothing: no lookup at all
    stop = {"event": "agent_stop", "instanceId": call["instance_id"]}
    assert (await post_hook(voice, json.dumps(stop).encode(), headers))[0] == 200
    assert looked_up == [call["instance_id"]]
    assert (await call_record(voice, call["id"])).ended_at is not None


# --- starting -----------------------------------------------------------------------------


async def test_deleting_a_call_while_it_starts_stops_the_instance_it_got(
    voice: VoiceE2E,
) -> None:
    store = voice.daemon.store
    assert store is not None
    await voice.zego.call(lambda emulator: emulator.set_latency(0.5))
    body = {"provider": "zego", "channel_id": CHANNEL, "user_id": USER, "zego": ZEGO_JOIN}
    starting = asyncio.create_task(voice.api("POST", "/voice/calls", body))

    async def row_written() -> bool:
        return bool(await store.voice_calls_active(CHANNEL))

    await eventually(row_written)  # written before the cloud is asked, which takes 0.5 s
    [pending] = await store.voice_calls_active(CHANNEL)
    assert pending.instance_id is None
    status, stopped = await voice.api("DELETE", f"/voice/calls/{pending.id}")
    assert (status, stopped["status"]) == (200, "ended")

    status, refused = await starting
    assert status == 409
    assert refused["error"]["message"] == "the call was ended while it started"
    [instance] = await voice.zego.instances()  # the cloud did start one: it is stopped again
    assert instance["active"] is False
    assert voice.gauge("zego") == 0
    assert (await voice.api("GET", "/voice/calls"))[1] == {"calls": []}
    ended = await call_record(voice, pending.id)
    assert (ended.instance_id, ended.end_reason) == (None, "stopped")


async def test_a_start_that_fails_after_the_cloud_started_stops_the_instance(
    voice: VoiceE2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = voice.daemon.store
    assert store is not None

    async def broken(call_id: str, *, instance_id: str, details: dict[str, Any]) -> bool:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr(store, "voice_call_started", broken)
    body = {"provider": "zego", "channel_id": CHANNEL, "user_id": USER, "zego": ZEGO_JOIN}
    status, _ = await voice.api("POST", "/voice/calls", body)
    assert status == 500
    await wait_until_instance_ended(voice.zego)
    assert len(await voice.zego.instances()) == 1
    assert voice.gauge("zego") == 0

    async def ended() -> bool:
        return not await store.voice_calls_active(CHANNEL)

    await eventually(ended)


# --- reconciliation -----------------------------------------------------------------------


async def test_two_alibaba_calls_in_one_conversation_reconcile_only_their_own(
    voice: VoiceE2E,
) -> None:
    first = await voice.start_call("aliyun")
    for text in ("first call, one", "first call, two"):
        assert (await voice.aliyun.say(text))["status"] == 200
    assert (await voice.api("DELETE", f"/voice/calls/{first['id']}"))[0] == 200
    first_ended = (await call_record(voice, first["id"])).ended_at
    assert first_ended is not None

    second = await voice.start_call("aliyun")
    assert second["conversation_id"] == first["conversation_id"]
    assert (await voice.aliyun.say("second call, one"))["status"] == 200
    assert (await voice.api("DELETE", f"/voice/calls/{second['id']}"))[0] == 200

    turns = await voice.turns(first["conversation_id"])
    by_call = [(t.voice_call_id, t.role, t.content) for t in turns]
    assert by_call == [
        (first["id"], "user", "first call, one"),
        (first["id"], "assistant", "Echo: first call, one"),
        (first["id"], "user", "first call, two"),
        (first["id"], "assistant", "Echo: first call, two"),
        (second["id"], "user", "second call, one"),
        (second["id"], "assistant", "Echo: second call, one"),
    ]
    # the second call asked for its own time only: from the first call's end on
    asked = await voice.aliyun.call(
        lambda emulator: [
            c.query for c in emulator.state.calls if c.action == "ListAIAgentDialogues"
        ]
    )
    assert len(asked) == 2
    assert int(asked[1]["StartTime"]) >= int(first_ended.timestamp() * 1000)


@dataclass
class Recorded:
    """Alibaba's record of a session, and the windows asked for (a leaf: the cloud's API)."""

    dialogues: list[Dialogue]
    asked: list[tuple[int, int]] = field(default_factory=list)

    async def list_dialogues(
        self, *, session_id: str, start_ms: int, end_ms: int
    ) -> list[Dialogue]:
        self.asked.append((start_ms, end_ms))
        return [d for d in self.dialogues if start_ms <= d.time_ms <= end_ms]


@dataclass
class Alone:
    calls: VoiceCalls
    store: Store
    clock: FakeClock
    streams: CallStreams
    conversation_id: str
    user_id: str

    async def call(self, started: datetime, *, ended: datetime | None) -> VoiceCallRecord:
        record = VoiceCallRecord(
            id=secrets.token_hex(8),
            channel_id=CHANNEL,
            provider="aliyun",
            conversation_id=self.conversation_id,
            user_id=self.user_id,
            platform_user_id=USER,
            secret_hash=secrets.token_hex(32),
            instance_id=secrets.token_hex(8),
            started_at=started,
            expires_at=started + timedelta(hours=1),
        )
        await self.store.voice_call_add(record)
        if ended is None:
            return record
        done = await self.store.voice_call_end(record.id, reason="stopped", now=ended)
        assert done is not None
        return done


@pytest.fixture
async def alone(tmp_path: Path) -> AsyncIterator[Alone]:
    clock = FakeClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))
    store = await Store.open(sqlite_url(tmp_path / "voice.db"), clock=clock)
    try:
        conversation, user = await store.conversation_for_user(
            CHANNEL,
            platform="dingtalk",
            platform_user_id=USER,
            idle_reset=timedelta(hours=12),
            now=clock.now,
        )
        streams = CallStreams()
        calls = VoiceCalls(
            store,
            lambda _channel: None,
            user_data_key=b"k" * 32,
            clock=clock,
            on_active=lambda _channel, _provider, _count: None,
            streams=streams,
        )
        yield Alone(calls, store, clock, streams, conversation.id, user)
        await calls.stop()
    finally:
        await store.close()


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_reconciliation_asks_only_for_the_calls_own_time(alone: Alone) -> None:
    t0 = alone.clock.now
    minute = timedelta(minutes=1)
    before = await alone.call(t0, ended=t0 + 10 * minute)
    call = await alone.call(t0 + 10 * minute + timedelta(seconds=20), ended=t0 + 20 * minute)
    after = await alone.call(t0 + 20 * minute + timedelta(seconds=30), ended=t0 + 30 * minute)
    said = [
        Dialogue("1", "user", "in the call before", ms(t0 + 9 * minute), "call"),
        Dialogue("1", "user", "in this call", ms(t0 + 15 * minute), "call"),
        Dialogue("2", "assistant", "typed in the app", ms(t0 + 16 * minute), "chat"),
        Dialogue("1", "user", "in the call after", ms(t0 + 21 * minute), "call"),
    ]
    record = Recorded(said)

    assert await alone.calls.reconcile(call, record) == 1
    assert record.asked == [(ms(t0 + 10 * minute), ms(t0 + 20 * minute + timedelta(seconds=30)))]
    turns = await alone.store.voice_turns_of_conversation(alone.conversation_id, 10)
    assert [(t.voice_call_id, t.content) for t in turns] == [(call.id, "in this call")]
    # the first call's margin reaches back a minute before it, and up to the next call
    record.asked.clear()
    assert await alone.calls.reconcile(before, record) == 1
    assert record.asked == [(ms(t0 - minute), ms(call.started_at))]
    assert await alone.calls.reconcile(after, record) == 1
    assert record.asked[-1] == (ms(t0 + 20 * minute), ms(t0 + 31 * minute))


async def test_reconciliation_skips_what_any_call_stored_and_is_bounded(alone: Alone) -> None:
    t0 = alone.clock.now
    earlier = await alone.call(t0 - timedelta(hours=2), ended=t0 - timedelta(hours=1))
    await alone.store.voice_turn_put(
        alone.conversation_id,
        call_id=earlier.id,
        round="9",
        role="user",
        content="said in an earlier call",
        now=t0 - timedelta(hours=2),
    )
    call = await alone.call(t0, ended=t0 + timedelta(minutes=30))
    at = ms(t0 + timedelta(minutes=1))
    huge = "x" * 50_000
    said = [
        Dialogue("a", "user", "said in an earlier call", at, "call"),
        Dialogue("b", "assistant", huge, at + 1, "call"),
        *(Dialogue(f"r{n}", "user", f"sentence {n}", at + 2 + n, "call") for n in range(300)),
    ]

    added = await alone.calls.reconcile(call, Recorded(said))

    assert added == RECONCILE_ADDED
    turns = await alone.store.voice_turns_of_conversation(call.conversation_id, 1000)
    mine = [t for t in turns if t.voice_call_id == call.id]
    assert len(mine) == RECONCILE_ADDED
    assert mine[0].content == "x" * RECONCILE_TEXT
    assert "said in an earlier call" not in [t.content for t in mine]
    assert mine[-1].content == f"sentence {RECONCILE_ADDED - 2}"


async def test_ending_a_call_cuts_the_answer_streaming_to_it(alone: Alone) -> None:
    call = await alone.call(alone.clock.now, ended=None)
    streaming = asyncio.Event()

    async def answer() -> None:
        with alone.streams.streaming(call.id):
            streaming.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(answer())
    await streaming.wait()
    ended = await alone.calls.end(call, "stopped", stop_cloud=False)
    assert ended is not None and ended.end_reason == "stopped"
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(alone.streams) == 0


# --- a channel going away -----------------------------------------------------------------


async def test_ending_a_channel_stops_its_instances_without_its_runtime(
    voice: VoiceE2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = calls_of(voice)
    zego_call = await voice.start_call("zego")
    aliyun_call = await voice.start_call("aliyun")
    config = voice.daemon.settings.channels[0].voice
    assert config is not None
    # the Alibaba call as one a previous run started: this process kept nothing of it
    calls._configs.pop(aliyun_call["id"])
    # the channel is gone (deleted, disabled, or its voice section removed)
    monkeypatch.setattr(calls, "_runtimes", lambda _channel: None)

    assert await calls.end_channel(CHANNEL, voice=config) == 2

    assert [i["active"] for i in await voice.zego.instances()] == [False]
    assert [i["active"] for i in await voice.aliyun.instances()] == [False]
    for call in (zego_call, aliyun_call):
        assert (await call_record(voice, call["id"])).end_reason == "channel stopped"
    assert (voice.gauge("zego"), voice.gauge("aliyun")) == (0, 0)
    assert await calls.end_channel(CHANNEL) == 0


async def test_an_ended_call_is_stopped_with_the_settings_it_started_with(
    voice: VoiceE2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = calls_of(voice)
    call = await voice.start_call("zego")
    monkeypatch.setattr(calls, "_runtimes", lambda _channel: None)
    status, ended = await voice.api("DELETE", f"/voice/calls/{call['id']}")
    assert (status, ended["status"]) == (200, "ended")
    assert [i["active"] for i in await voice.zego.instances()] == [False]
    assert call["id"] not in calls._configs  # kept only while the call is under way
