"""The voice LLM endpoint in a running daemon: a DingTalk channel with `[channels.voice]`, a call
stored the way `POST /api/v1/voice/calls` stores it, and requests shaped as ZEGO's agent sends
them. The clouds themselves (starting calls, their callbacks) are in test_e2e_voice.py."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.dingtalk.emulator import EmulatorThread
from channels.voice.endpoint import ALIYUN_INTERRUPTED, secret_hash, user_data
from channels.voice.sse import StreamFramingError, read_chunks
from daemon.app import Daemon
from daemon.config import WebhooksSection
from daemon.secrets import SecretBox, load_key
from storage.repository import MessageRecord, Store, VoiceCallRecord
from tests.admin_support import build_request, raw_http
from tests.agents_support import fake_llm_fixture
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import CHANNEL, FAST_BACKOFF, Stack, settings_for, wait_until
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_fixture"]

SECRET = "per-call-secret-" + "x" * 24
LLM_KEY = "aliyun-console-llm-key"
USER = "user-1"  # the DingTalk emulator's default sender
INSTANCE = "1912122918452641792"
VOICE = {
    "public_base_url": "http://127.0.0.1:9",  # never called here: no call is started
    "max_call_seconds": 600,
    "zego": {
        "app_id": 1234567890,
        "server_secret": "zego-secret",
        "api_base": "http://127.0.0.1:9",
    },
    "aliyun": {
        "access_key_id": "ak",
        "access_key_secret": "aks",
        "agent_id": "agent-1",
        "llm_api_key": LLM_KEY,
        "callback_token": "cb-token",
        "endpoint": "http://127.0.0.1:9",
    },
}


@dataclass
class VoiceStack:
    stack: Stack
    store: Store
    url: str
    http: aiohttp.ClientSession

    async def call(
        self, *, secret: str = SECRET, expires_in: float = 600, provider: str = "zego"
    ) -> VoiceCallRecord:
        """A call for USER on the channel, as the call API would store it."""
        now = datetime.now(UTC)
        conversation, user = await self.store.conversation_for_user(
            CHANNEL,
            platform="dingtalk",
            platform_user_id=USER,
            idle_reset=timedelta(hours=12),
            now=now,
        )
        record = VoiceCallRecord(
            id=uuid.uuid4().hex,
            channel_id=CHANNEL,
            provider=provider,
            conversation_id=conversation.id,
            user_id=user,
            platform_user_id=USER,
            secret_hash=secret_hash(secret),
            instance_id=INSTANCE,
            details={},
            started_at=now,
            expires_at=now + timedelta(seconds=expires_in),
            ended_at=None,
            end_reason=None,
        )
        await self.store.voice_call_add(record)
        return record

    async def ask(
        self,
        text: str,
        *,
        round_id: int | str = 1,
        secret: str | None = SECRET,
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> tuple[int, str]:
        """A ZEGO-shaped request; the status and the body as text."""
        payload = {
            "model": "channeld",
            "stream": True,
            "messages": [
                {"role": "system", "content": "ZEGO's own prompt, ignored"},
                {"role": "user", "content": text},
            ],
            "agent_info": {
                "room_id": "room-1",
                "agent_instance_id": INSTANCE,
                "agent_user_id": "agent-1",
                "user_id": "zego-user-1",
                "round_id": round_id,
                "time_stamp": 1765510379113,
            },
            **body,
        }
        sent = {"Authorization": f"Bearer {secret}"} if secret else {}
        async with self.http.post(self.url, json=payload, headers={**sent, **(headers or {})}) as r:
            received = b""
            try:
                async for data in r.content.iter_any():
                    received += data
            except aiohttp.ClientPayloadError:
                pass  # the stream was cut: what arrived is the answer as far as it went
            return r.status, received.decode()

    async def turns(self, conversation_id: str) -> list[MessageRecord]:
        return await self.store.recent_messages(conversation_id, 100)


@pytest.fixture
async def voice(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm: FakeLLM
) -> AsyncIterator[VoiceStack]:
    settings = settings_for(tmp_path, dingtalk_emulator.url, fake_llm, channel={"voice": VOICE})
    settings = settings.model_copy(update={"webhooks": WebhooksSection(listen="127.0.0.1:0")})
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        assert daemon.webhooks is not None and daemon.store is not None
        stack = Stack(daemon, dingtalk_emulator, fake_llm)
        await stack.connected()
        url = f"http://127.0.0.1:{daemon.webhooks.port}/voice/{CHANNEL}/chat/completions"
        async with aiohttp.ClientSession() as http:
            yield VoiceStack(stack, daemon.store, url, http)
    finally:
        await daemon.stop()


def spoken(body: str) -> str:
    """The answer as ZEGO's agent would speak it (StreamFramingError if it would not)."""
    return read_chunks(body.splitlines()).text


async def test_a_call_after_a_chat_is_answered_with_the_chat_in_context(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    sent = await voice.stack.say("my name is Ada")
    await voice.stack.wait_bot_items(sent.conversation_id, lambda i: len(i) == 1)
    await voice.stack.idle()
    call = await voice.call()
    status, body = await voice.ask("what is my name")
    assert status == 200
    assert spoken(body) == "Echo: what is my name"
    request = fake_llm.requests[-1].messages
    assert [m["content"] for m in request if m["role"] == "user"] == [
        "my name is Ada",
        "what is my name",
    ]
    assert "ZEGO's own prompt, ignored" not in json.dumps(request)
    turns = await voice.turns(call.conversation_id)
    assert [(t.role, t.content, t.source) for t in turns[-2:]] == [
        ("user", "what is my name", "voice"),
        ("assistant", "Echo: what is my name", "voice"),
    ]
    answered = {"channel": CHANNEL, "provider": "zego", "outcome": "answered"}
    registry = voice.stack.daemon.metrics.registry
    assert registry.get_sample_value("channeld_voice_turns_total", answered) == 1
    first_chunks = voice.stack.daemon.metrics.registry.get_sample_value(
        "channeld_voice_first_chunk_seconds_count", {"channel": CHANNEL, "provider": "zego"}
    )
    assert first_chunks == 1


async def test_the_next_text_answer_knows_what_was_said_in_the_call(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    await voice.call()
    status, _ = await voice.ask("remember the number forty-two")
    assert status == 200
    sent = await voice.stack.say("which number did I say?")
    await voice.stack.wait_bot_items(sent.conversation_id, lambda i: len(i) == 1)
    request = fake_llm.requests[-1].messages
    assert {"role": "user", "content": "remember the number forty-two"} in request
    assert {"role": "assistant", "content": "Echo: remember the number forty-two"} in request
    assert request[-1] == {"role": "user", "content": "which number did I say?"}


async def test_a_retried_round_is_stored_once_and_answered_without_its_first_attempt(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call()
    assert (await voice.ask("first try", round_id=650459806))[0] == 200
    assert (await voice.ask("first try again", round_id=650459806))[0] == 200
    turns = [t for t in await voice.turns(call.conversation_id) if t.source == "voice"]
    assert [(t.role, t.content, t.voice_round) for t in turns] == [
        ("user", "first try again", "650459806"),
        ("assistant", "Echo: first try again", "650459806"),
    ]
    retried = fake_llm.requests[-1].messages
    assert "first try" not in [m["content"] for m in retried]


@pytest.mark.parametrize(
    ("secret", "headers"),
    [
        ("not-the-call-secret", {}),
        (None, {}),
        (None, {"Authorization": "Basic " + SECRET}),
        (LLM_KEY, {}),  # Alibaba's key without its signed userData
    ],
)
async def test_a_request_without_the_call_secret_is_refused_and_answers_nothing(
    voice: VoiceStack, fake_llm: FakeLLM, secret: str | None, headers: dict[str, str]
) -> None:
    call = await voice.call()
    status, body = await voice.ask("hello", secret=secret, headers=headers)
    assert (status, json.loads(body)) == (401, {"error": "unauthorized"})
    assert fake_llm.requests == []
    assert await voice.turns(call.conversation_id) == []


async def test_an_expired_or_ended_call_or_another_instance_is_refused(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    await voice.call(secret="expired-" + SECRET, expires_in=-1)
    assert (await voice.ask("hi", secret="expired-" + SECRET))[0] == 401
    ended = await voice.call(secret="ended-" + SECRET)
    await voice.store.voice_call_end(ended.id, reason="stopped", now=datetime.now(UTC))
    assert (await voice.ask("hi", secret="ended-" + SECRET))[0] == 401
    await voice.call()
    other = {"agent_instance_id": "someone-else", "round_id": 3}
    assert (await voice.ask("hi", agent_info=other))[0] == 401
    assert fake_llm.requests == []


async def test_alibaba_user_data_not_signed_by_channeld_is_refused(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call(provider="aliyun")
    forged = json.dumps({"call": call.id, "sig": "0" * 64})
    extend = {"instanceId": INSTANCE, "sentenceId": 3, "userData": forged}
    status, _ = await voice.ask("hi", secret=LLM_KEY, extendData=extend)
    assert status == 401
    assert fake_llm.requests == []


async def test_requests_a_voice_agent_would_not_send_are_refused(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    await voice.call()
    assert (await voice.ask("hi", stream=False))[0] == 400
    assert (await voice.ask("hi", headers={"Origin": "https://evil.example"}))[0] == 403
    assert (await voice.ask("hi", messages=[{"role": "assistant", "content": "x"}]))[0] == 400
    assert (await voice.ask("\x00 \x01 "))[0] == 400  # nothing left once cleaned
    assert (await voice.ask("hi", round_id="r" * 200))[0] == 400
    assert fake_llm.requests == []


async def test_hostile_text_is_cleaned_before_it_is_stored(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call()
    status, body = await voice.ask("tab\there\x00 and \ud83d alone")
    assert status == 200
    turns = await voice.turns(call.conversation_id)
    assert "\x00" not in turns[0].content
    assert "\ud83d" not in turns[0].content
    assert spoken(body).startswith("Echo: ")


async def test_a_failing_model_is_answered_with_a_spoken_apology_that_is_not_stored(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call()
    fake_llm.script_error(400, "bad request")
    status, body = await voice.ask("hello?")
    assert status == 200
    assert "Sorry" in spoken(body)
    assert [t.role for t in await voice.turns(call.conversation_id)] == ["user"]


def test_the_strict_reader_refuses_what_zego_would_not_speak() -> None:
    def chunk(content: str, finish: str) -> str:
        choice = {"delta": {"content": content}, "finish_reason": finish}
        return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [choice]})

    good = [chunk("Hi", ""), chunk("", "stop"), "data: [DONE]"]
    assert read_chunks(good).text == "Hi"
    early_stop = [chunk("Hi", "stop"), *good[1:]]
    for broken in (good[:2], [good[0], good[2]], early_stop, ["event: x", *good], [*good, good[0]]):
        with pytest.raises(StreamFramingError):
            read_chunks(broken)


async def test_a_bearer_token_of_undecodable_bytes_is_refused_quietly(
    voice: VoiceStack, fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    await voice.call()
    assert voice.stack.daemon.webhooks is not None
    port = voice.stack.daemon.webhooks.port
    assert port is not None
    body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = [(b"Authorization", b"Bearer \xc3\x28"), (b"Content-Type", b"application/json")]
    for _ in range(3):
        request = build_request("POST", f"/voice/{CHANNEL}/chat/completions", port, headers, body)
        assert (await raw_http(port, request)).status == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fake_llm.requests == []


async def test_a_request_that_names_no_instance_is_refused(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    await voice.call()
    assert (await voice.ask("hi", agent_info={"round_id": 5}))[0] == 401
    assert fake_llm.requests == []


async def test_a_new_round_cuts_the_answer_still_streaming_for_the_call(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call()
    fake_llm.script_reply("one two three four five six seven eight", token_interval=0.2)
    first = asyncio.create_task(voice.ask("tell me a long story", round_id=1))
    await wait_until(lambda: len(fake_llm.requests) == 1)
    await asyncio.sleep(0.3)  # a word or two has been said
    status, body = await voice.ask("stop, another question", round_id=2)
    assert status == 200 and spoken(body) == "Echo: stop, another question"
    cut_status, cut_body = await first
    assert cut_status == 200 and "[DONE]" not in cut_body  # it just ended
    turns = [t for t in await voice.turns(call.conversation_id) if t.role == "assistant"]
    assert turns[0].interrupted and "eight" not in turns[0].content
    assert not turns[1].interrupted


async def test_an_answer_stops_when_its_call_runs_out_of_time(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call(expires_in=1.0)
    fake_llm.script_reply("one two three four five six seven eight nine ten", token_interval=0.3)
    status, body = await voice.ask("a long answer please")
    assert status == 200 and "[DONE]" not in body
    (answer,) = [t for t in await voice.turns(call.conversation_id) if t.role == "assistant"]
    assert answer.interrupted and "ten" not in answer.content


async def test_an_emoji_split_across_deltas_is_spoken_whole(
    voice: VoiceStack, fake_llm: FakeLLM
) -> None:
    call = await voice.call()
    fake_llm.script_reply(tokens=["smile ", "\ud83d", "\ude00", " and a lone \ud83d"])
    status, body = await voice.ask("smile")
    assert status == 200
    assert spoken(body) == "smile \U0001f600 and a lone \ufffd"
    assert (await voice.turns(call.conversation_id))[-1].content == spoken(body)


async def test_alibabas_mark_only_cuts_what_was_said(
    voice: VoiceStack, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    call = await voice.call(provider="aliyun")
    key = SecretBox(load_key(tmp_path)).derive("voice-user-data")
    data = user_data(key, CHANNEL, call.id)

    async def say(text: str, sentence: int, heard: str | None = None) -> int:
        history = [] if heard is None else [{"role": "assistant", "content": heard}]
        messages = [*history, {"role": "user", "content": text}]
        extend = {"instanceId": INSTANCE, "sentenceId": sentence, "userData": data}
        return (await voice.ask(text, secret=LLM_KEY, extendData=extend, messages=messages))[0]

    assert await say("first", 1) == 200
    assert await say("second", 2, heard=f"Echo{ALIYUN_INTERRUPTED}") == 200
    assert await say("third", 3, heard=f"I promised you a refund{ALIYUN_INTERRUPTED}") == 200
    answers = [t for t in await voice.turns(call.conversation_id) if t.role == "assistant"]
    assert [(t.content, t.interrupted) for t in answers] == [
        ("Echo", True),  # cut where the mark says
        ("Echo: second", True),  # not a beginning of what was said: only noted
        ("Echo: third", False),
    ]
