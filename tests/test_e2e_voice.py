"""Voice calls end to end: a daemon with a DingTalk channel offering calls, the DingTalk emulator,
the fake LLM, and both voice clouds' emulators (Alibaba's driven by the official SDK): chat,
call, chat again, with interruptions, hang-ups, expiry and the post-call reconciliation."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from channels.dingtalk.emulator import EmulatorThread
from channels.voice import calls as voice_calls
from channels.voice.aliyun import Dialogue
from channels.voice.emulator import VoiceEmulatorThread
from channels.voice.emulator.aliyun import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_AGENT,
)
from channels.voice.emulator.zego import DEFAULT_APP_ID, DEFAULT_SECRET
from daemon.app import Daemon
from daemon.config import WebhooksSection
from storage.repository import MessageRecord
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import CHANNEL, FAST_BACKOFF, Stack, settings_for, wait_until
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

TOKEN = "admin-token-voice"
LLM_KEY = "console-llm-key"
CALLBACK_TOKEN = "console-callback-token"
USER = "user-1"  # the DingTalk emulator's default sender
ZEGO_JOIN = {
    "room_id": "room-1",
    "user_id": "u1",
    "user_stream_id": "u1-main",
    "agent_user_id": "agent-1",
    "agent_stream_id": "agent-1-main",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class VoiceE2E:
    stack: Stack
    zego: VoiceEmulatorThread
    aliyun: VoiceEmulatorThread
    http: aiohttp.ClientSession
    admin: str

    @property
    def daemon(self) -> Daemon:
        return self.stack.daemon

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.request(
            method, f"{self.admin}/api/v1{path}", json=body, headers=headers
        ) as response:
            return response.status, await response.json()

    async def start_call(self, provider: str, user: str = USER, **join: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"provider": provider, "channel_id": CHANNEL, "user_id": user}
        if provider == "zego":
            body["zego"] = join or ZEGO_JOIN
        else:
            body["aliyun"] = join or {"call_type": "AUDIO_CALL"}
        status, call = await self.api("POST", "/voice/calls", body)
        assert status == 201, call
        return dict(call)

    async def chat(self, text: str) -> None:
        sent = await self.stack.say(text)
        before = len(await self.stack.bot_items(sent.conversation_id))
        await self.stack.wait_bot_items(sent.conversation_id, lambda i: len(i) > before)
        await self.stack.idle()

    async def turns(self, conversation_id: str) -> list[MessageRecord]:
        assert self.daemon.store is not None
        return await self.daemon.store.recent_messages(conversation_id, 100)

    def gauge(self, provider: str) -> float | None:
        value: float | None = self.daemon.metrics.registry.get_sample_value(
            "channeld_voice_calls_active", {"channel": CHANNEL, "provider": provider}
        )
        return value


@pytest.fixture
async def voice(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> AsyncIterator[VoiceE2E]:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    async with (
        VoiceEmulatorThread("zego", retry_scale=0.01) as zego,
        VoiceEmulatorThread("aliyun", retry_scale=0.01) as aliyun,
    ):
        await zego.set_console(callback_url=f"{public}/hooks/{CHANNEL}/voice")
        await aliyun.set_console(
            llm_base_url=f"{public}/voice/{CHANNEL}",
            llm_api_key=LLM_KEY,
            callback_url=f"{public}/hooks/{CHANNEL}/voice",
            callback_token=CALLBACK_TOKEN,
        )
        voice_section = {
            "public_base_url": public,
            "max_call_seconds": 600,
            "zego": {
                "app_id": int(DEFAULT_APP_ID),
                "server_secret": DEFAULT_SECRET,
                "api_base": zego.url,
            },
            "aliyun": {
                "access_key_id": DEFAULT_ACCESS_KEY_ID,
                "access_key_secret": DEFAULT_ACCESS_KEY_SECRET,
                "agent_id": DEFAULT_AGENT,
                "llm_api_key": LLM_KEY,
                "callback_token": CALLBACK_TOKEN,
                "endpoint": aliyun.url,
            },
        }
        settings = settings_for(
            tmp_path, dingtalk_emulator.url, fake_llm, channel={"voice": voice_section}
        )
        settings = settings.model_copy(
            update={
                "webhooks": WebhooksSection(listen=f"127.0.0.1:{port}"),
                "admin": settings.admin.model_copy(update={"token": SecretStr(TOKEN)}),
            }
        )
        daemon = Daemon(settings, backoff=FAST_BACKOFF)
        await daemon.start()
        try:
            stack = Stack(daemon, dingtalk_emulator, fake_llm)
            await stack.connected()
            assert daemon.admin is not None
            admin = f"http://127.0.0.1:{daemon.admin.port}"
            async with aiohttp.ClientSession() as http:
                yield VoiceE2E(stack, zego, aliyun, http, admin)
        finally:
            await daemon.stop()


def users(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


async def test_zego_chat_then_call_then_chat_share_one_conversation(
    voice: VoiceE2E, fake_llm: FakeLLM
) -> None:
    await voice.chat("my name is Ada")
    call = await voice.start_call("zego")
    assert call["provider"] == "zego" and call["status"] == "active"
    assert call["agent_instance_id"]
    (instance,) = await voice.zego.instances()
    assert instance["instance_id"] == call["agent_instance_id"]
    assert instance["llm_url"].endswith(f"/voice/{CHANNEL}/chat/completions")
    assert voice.gauge("zego") == 1

    said = await voice.zego.say("what is my name")
    assert said["status"] == 200 and said["answer"] == "Echo: what is my name"
    # the first voice answer was asked with the chat's history, not ZEGO's window
    assert users(fake_llm.requests[-1].body) == ["my name is Ada", "what is my name"]

    await voice.zego.interrupt(played_chars=4)  # the user spoke over it after "Echo"
    await wait_until_stored(voice, call["conversation_id"], "Echo")
    spoken = await voice.zego.call(lambda cloud: cloud.call().turns[-1])
    await voice.zego.hangup()  # AgentInstanceDeleted, code 1202
    await wait_until(lambda: voice.gauge("zego") == 0)
    # the call's secret stopped working with it: its last request, sent again, is refused
    async with voice.http.post(spoken.url, json=spoken.body, headers=spoken.headers) as refused:
        assert refused.status == 401
    status, ended = await voice.api("GET", f"/voice/calls/{call['id']}")
    assert status == 200 and ended["status"] == "ended" and ended["end_reason"] == "user left"
    assert (await voice.api("GET", "/voice/calls"))[1] == {"calls": []}

    await voice.chat("and what did I just say on the phone?")
    request = fake_llm.requests[-1].body
    assert {"role": "user", "content": "what is my name"} in request["messages"]
    assert {"role": "assistant", "content": "Echo"} in request["messages"]
    turns = await voice.turns(call["conversation_id"])
    assert [(t.source, t.role) for t in turns] == [
        ("text", "user"),
        ("text", "assistant"),
        ("voice", "user"),
        ("voice", "assistant"),
        ("text", "user"),
        ("text", "assistant"),
    ]
    assert turns[3].interrupted


async def wait_until_stored(voice: VoiceE2E, conversation_id: str, answer: str) -> None:
    for _ in range(200):
        turns = await voice.turns(conversation_id)
        if any(t.role == "assistant" and t.content == answer for t in turns):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{answer!r} never stored")


async def test_a_zego_round_the_cloud_retries_is_stored_once(
    voice: VoiceE2E, fake_llm: FakeLLM
) -> None:
    call = await voice.start_call("zego")
    first = await voice.zego.say("hello there")
    again = await voice.zego.repeat()
    assert again["round"] == first["round"]
    voice_turns = [t for t in await voice.turns(call["conversation_id"]) if t.source == "voice"]
    assert [(t.role, t.voice_round) for t in voice_turns] == [
        ("user", str(first["round"])),
        ("assistant", str(first["round"])),
    ]
    assert len(fake_llm.requests) == 2


async def test_deleting_a_zego_call_stops_the_instance_and_revokes_its_secret(
    voice: VoiceE2E,
) -> None:
    call = await voice.start_call("zego")
    status, stopped = await voice.api("DELETE", f"/voice/calls/{call['id']}")
    assert status == 200 and stopped["status"] == "ended" and stopped["end_reason"] == "stopped"
    (instance,) = await voice.zego.instances()
    assert instance["active"] is False
    # the cloud is told once; a second DELETE finds the call ended
    assert (await voice.api("DELETE", f"/voice/calls/{call['id']}"))[1]["status"] == "ended"
    assert voice.gauge("zego") == 0


async def test_an_alibaba_call_through_the_sdk_with_interruption_and_reconciliation(
    voice: VoiceE2E, fake_llm: FakeLLM
) -> None:
    await voice.chat("I live in Hangzhou")
    call = await voice.start_call("aliyun")
    for field in ("instance_id", "rtc_channel_id", "rtc_user_id", "rtc_join_token"):
        assert call[field], field
    status, listed = await voice.api("GET", "/voice/calls")
    assert status == 200 and [c["id"] for c in listed["calls"]] == [call["id"]]
    assert "rtc_join_token" not in listed["calls"][0]  # returned once, never stored

    said = await voice.aliyun.say("where do I live")
    assert said["status"] == 200 and said["answer"] == "Echo: where do I live"
    assert "I live in Hangzhou" in users(fake_llm.requests[-1].body)

    await voice.aliyun.interrupt(played_chars=6)  # heard "Echo: "
    said = await voice.aliyun.say("sorry, go on")
    assert said["status"] == 200
    await voice.aliyun.say("this one the endpoint never hears", unseen=True, answer="Heard anyway")

    status, _ = await voice.api("DELETE", f"/voice/calls/{call['id']}")
    assert status == 200
    turns = [t for t in await voice.turns(call["conversation_id"]) if t.source == "voice"]
    assert [(t.role, t.content) for t in turns] == [
        ("user", "where do I live"),
        ("assistant", "Echo: "),  # trimmed at the mark in the next request's history
        ("user", "sorry, go on"),
        ("assistant", "Echo: sorry, go on"),
        ("user", "this one the endpoint never hears"),
        ("assistant", "Heard anyway"),
    ]
    assert turns[1].interrupted
    # reconciliation adds a missing round once, however often it runs
    assert voice.daemon.voice_calls is not None
    assert voice.daemon.store is not None
    ended = await voice.daemon.store.voice_call_get(call["id"])
    assert ended is not None
    config = voice.stack.daemon.settings.channels[0].voice
    assert config is not None and config.aliyun is not None
    api = voice.daemon.voice_calls._clouds.aliyun_api(config.aliyun)
    try:
        assert await voice.daemon.voice_calls.reconcile(ended, api) == 0
    finally:
        await api.aclose()
    # Alibaba's RoundId need not be the sentenceId the endpoint saw: the text keeps it once
    renumbered = Renumbered([(t.role, t.content) for t in turns])
    assert await voice.daemon.voice_calls.reconcile(ended, renumbered) == 0
    assert len(await voice.turns(call["conversation_id"])) == len(turns) + 2  # + the chat


@dataclass
class Renumbered:
    """Alibaba's record of the call under other round ids (the full answer, not the heard part)."""

    said: list[tuple[str, str]]

    async def list_dialogues(
        self, *, session_id: str, start_ms: int, end_ms: int
    ) -> list[Dialogue]:
        return [
            Dialogue(f"r{n}", "user" if role == "user" else "assistant", text + " ", n, "call")
            for n, (role, text) in enumerate(self.said)
        ]


async def test_alibaba_agent_stop_ends_the_call(voice: VoiceE2E) -> None:
    call = await voice.start_call("aliyun")
    await voice.aliyun.hangup()
    await wait_until(lambda: voice.gauge("aliyun") == 0)
    status, ended = await voice.api("GET", f"/voice/calls/{call['id']}")
    assert status == 200 and ended["status"] == "ended"
    stops = await voice.aliyun.callback_attempts("agent_stop")
    assert [attempt.status for attempt in stops] == [200]


async def test_a_forged_callback_is_refused_and_changes_nothing(voice: VoiceE2E) -> None:
    call = await voice.start_call("aliyun")
    assert voice.daemon.webhooks is not None
    url = f"http://127.0.0.1:{voice.daemon.webhooks.port}/hooks/{CHANNEL}/voice"
    body = {"event": "agent_stop", "instanceId": call["instance_id"]}
    async with voice.http.post(url, json=body, headers={"Authorization": "guess"}) as response:
        assert response.status == 401
    async with voice.http.post(url, json={"Event": "AgentInstanceDeleted"}) as response:
        assert response.status == 401  # no ZEGO signature either
    assert (await voice.api("GET", f"/voice/calls/{call['id']}"))[1]["status"] == "active"


async def test_starting_a_call_explains_what_is_wrong(voice: VoiceE2E) -> None:
    status, body = await voice.api("POST", "/voice/calls", {"provider": "zego"})
    assert status == 422 and body["error"]["code"] == "validation_error"
    status, body = await voice.api(
        "POST",
        "/voice/calls",
        {"provider": "zego", "channel_id": "nope", "user_id": "u", "zego": ZEGO_JOIN},
    )
    assert status == 404
    bad_ids = {**ZEGO_JOIN, "user_id": "not allowed!"}
    status, body = await voice.api(
        "POST",
        "/voice/calls",
        {"provider": "zego", "channel_id": CHANNEL, "user_id": "u", "zego": bad_ids},
    )
    assert status == 422 and "zego.user_id" in body["error"]["message"]


async def test_a_call_past_its_time_is_ended_and_its_instance_stopped(
    voice: VoiceE2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = voice.daemon.voice_calls
    assert calls is not None
    call = await voice.start_call("zego")
    monkeypatch.setattr(voice_calls, "EXPIRY_CHECK", 0.02)
    later = datetime.now(UTC) + timedelta(hours=1)
    monkeypatch.setattr(calls, "_clock", lambda: later)
    await calls.stop()  # the loop picks the shorter interval up when it starts again
    await calls.start()
    await wait_until(lambda: voice.gauge("zego") == 0)
    status, ended = await voice.api("GET", f"/voice/calls/{call['id']}")
    assert (status, ended["end_reason"]) == (200, "expired")
    await wait_until_instance_ended(voice.zego)


async def wait_until_instance_ended(cloud: VoiceEmulatorThread) -> None:
    for _ in range(200):
        if not any(i["active"] for i in await cloud.instances()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the cloud's instance is still active")


async def test_ten_concurrent_zego_calls_each_answer_in_their_own_conversation(
    voice: VoiceE2E, fake_llm: FakeLLM
) -> None:
    started = [
        await voice.start_call(
            "zego",
            user=f"caller-{n}",
            room_id=f"room-{n}",
            user_id=f"u{n}",
            user_stream_id=f"u{n}-main",
            agent_user_id=f"agent-{n}",
            agent_stream_id=f"agent-{n}-main",
        )
        for n in range(10)
    ]
    instances = [c["agent_instance_id"] for c in started]
    said = await asyncio.gather(
        *(voice.zego.say(f"caller {n} speaking", instance_id=i) for n, i in enumerate(instances))
    )
    assert [s["answer"] for s in said] == [f"Echo: caller {n} speaking" for n in range(10)]
    for n, call in enumerate(started):
        turns = await voice.turns(call["conversation_id"])
        assert [t.content for t in turns] == [f"caller {n} speaking", f"Echo: caller {n} speaking"]
    assert voice.gauge("zego") == 10


async def test_disabling_a_channel_ends_its_calls_and_stops_their_instances(
    voice: VoiceE2E,
) -> None:
    call = await voice.start_call("zego")
    status, _ = await voice.api("POST", f"/channels/{CHANNEL}/disable", {})
    assert status == 200
    status, ended = await voice.api("GET", f"/voice/calls/{call['id']}")
    assert (status, ended["status"], ended["end_reason"]) == (200, "ended", "channel stopped")
    await wait_until_instance_ended(voice.zego)
    assert voice.gauge("zego") == 0


async def test_a_restarted_channel_keeps_its_calls(voice: VoiceE2E) -> None:
    call = await voice.start_call("zego")
    status, _ = await voice.api("POST", f"/channels/{CHANNEL}/restart", {})
    assert status == 200
    await voice.stack.connected()
    said = await voice.zego.say("still there?")
    assert said["status"] == 200 and said["answer"] == "Echo: still there?"
    assert (await voice.api("GET", f"/voice/calls/{call['id']}"))[1]["status"] == "active"


async def test_a_call_before_any_chat_and_the_chat_after_it_are_one_person(
    voice: VoiceE2E, fake_llm: FakeLLM
) -> None:
    call = await voice.start_call("zego")
    assert (await voice.zego.say("I call before I ever wrote"))["status"] == 200
    await voice.chat("and now I write")
    store = voice.daemon.store
    assert store is not None
    (person,) = await store.list_users(search=None, limit=10)
    conversation = await store.get_conversation(call["conversation_id"])
    assert conversation is not None and conversation.user_id == person.id
    found = await store.get_user(person.id)
    assert found is not None
    _, identities = found
    assert [(i.platform, i.platform_user_id) for i in identities] == [("dingtalk", USER)]
    assert identities[0].tenant  # the first message gave the call's identity its tenant
    assert {"role": "user", "content": "I call before I ever wrote"} in fake_llm.requests[-1].body[
        "messages"
    ]
