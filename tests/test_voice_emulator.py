"""The voice clouds' emulator (`channeld emulate voice`) against a loopback LLM endpoint that
streams strict SSE (or a broken stream), a loopback callback receiver, a signed ZEGO client
written here and the real `alibabacloud-ice20201109` SDK: each cloud's API checks and codes, the
agent's request shape, history window and 20-record limit, interruptions (ZEGO's signed
callback, Alibaba's marker), hang-ups, stops and expiry, dialogues paged through the SDK, the
command and `channeld chat --voice`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from alibabacloud_ice20201109 import models  # type: ignore[import-untyped]
from alibabacloud_ice20201109.client import Client  # type: ignore[import-untyped]
from alibabacloud_tea_openapi.exceptions import ClientException  # type: ignore[import-untyped]
from alibabacloud_tea_openapi.utils_models import Config  # type: ignore[import-untyped]

from channels.callbacks import Callback
from channels.voice.aliyun import AliyunVoiceApi
from channels.voice.aliyun_callbacks import check_callback as check_aliyun
from channels.voice.aliyun_callbacks import parse_event as parse_aliyun
from channels.voice.emulator import VoiceEmulatorThread, ZegoAgentEmulator
from channels.voice.emulator.aliyun import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_AGENT,
    INTERRUPTED,
)
from channels.voice.emulator.zego import DEFAULT_APP_ID, DEFAULT_SECRET
from channels.voice.events import CallEnded, TurnInterrupted
from channels.voice.sse import CONTENT_TYPE, ChunkFramer
from channels.voice.zego import ZegoAgentApi
from channels.voice.zego import check_callback as check_zego
from channels.voice.zego import parse_event as parse_zego
from daemon.chat import EXIT_NO_CALL, voice_chat
from daemon.chat import chat as text_chat
from tests.e2e_support import emulate
from tests.receiver_support import HookReceiver

LLM_KEY = "call-secret-0123456789"
CONSOLE_KEY = "console-llm-key-abcdef"
TOKEN = "callback-token-42"
AGENT = "channeld-voice"
RTC = {
    "RoomId": "room_1",
    "AgentStreamId": "as_1",
    "AgentUserId": "agent_1",
    "UserStreamId": "us_1",
}


# -- loopback doubles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """One request the LLM endpoint received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = self.body["messages"]
        return messages


class Endpoint:
    """channeld's place: an OpenAI-compatible endpoint streaming `ChunkFramer` SSE. Answers
    "You said <utterance>. Anything else?" unless scripted: a text, "bad" (no [DONE]) or a
    status."""

    def __init__(self) -> None:
        self.asked: list[Asked] = []
        self.script: deque[str | int] = deque()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Endpoint:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.asked.append(Asked(request.path, dict(request.headers), body))
        script = self.script.popleft() if self.script else None
        if isinstance(script, int):
            return web.json_response({"error": "refused"}, status=script)
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await resp.prepare(request)
        framer = ChunkFramer(body["model"])
        text = (
            script
            if script not in (None, "bad")
            else f"You said {body['messages'][-1]['content']}. Anything else?"
        )
        for word in str(text).split(" "):
            await resp.write(framer.delta(word + " "))
        if script != "bad":
            await resp.write(framer.stop())
        await resp.write_eof()
        return resp


@dataclass(frozen=True)
class Hook:
    """One callback POST."""

    headers: dict[str, str]
    body: dict[str, Any]


class Hooks(HookReceiver[Hook]):
    """The console's callback URL."""

    async def received_from(self, request: web.Request, status: int) -> Hook:
        return Hook(dict(request.headers), await request.json())

    def events(self, event: str) -> list[dict[str, Any]]:
        return [
            h.body for h in self.received if event in (h.body.get("Event"), h.body.get("event"))
        ]


def zego_signature(secret: str, timestamp: Any, nonce: str) -> str:
    """ZEGO's callback rule written out again: sha1 of the three strings sorted and joined."""
    joined = "".join(sorted([secret, str(timestamp), nonce]))
    return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324 - ZEGO's scheme


class ZegoClient:
    """A signed client of the AI Agent API, its md5 rule written out again."""

    def __init__(
        self, http: aiohttp.ClientSession, base: str, secret: str = DEFAULT_SECRET
    ) -> None:
        self.http = http
        self.base = base
        self.secret = secret

    def query(self, action: str, **overrides: str) -> dict[str, str]:
        nonce = secrets.token_hex(8)
        timestamp = overrides.get("Timestamp", str(int(time.time())))
        signed = f"{DEFAULT_APP_ID}{nonce}{self.secret}{timestamp}"
        query = {
            "Action": action,
            "AppId": DEFAULT_APP_ID,
            "SignatureNonce": nonce,
            "Timestamp": timestamp,
            "Signature": hashlib.md5(signed.encode()).hexdigest(),  # noqa: S324 - ZEGO's
            "SignatureVersion": "2.0",
        }
        return {**query, **overrides}

    async def call(self, action: str, body: dict[str, Any], **overrides: str) -> dict[str, Any]:
        async with self.http.post(
            self.base + "/", params=self.query(action, **overrides), json=body
        ) as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    async def register(self, llm_url: str, **llm: Any) -> dict[str, Any]:
        block = {"Url": llm_url, "ApiKey": LLM_KEY, "Model": "voice-model", **llm}
        return await self.call("RegisterAgent", {"AgentId": AGENT, "Name": "Ada", "LLM": block})

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"AgentId": AGENT, "UserId": "user_1", "RTC": RTC, **fields}
        return await self.call("CreateAgentInstance", body)

    async def started(self, **fields: Any) -> str:
        answer = await self.create(**fields)
        assert answer["Code"] == 0, answer
        instance: str = answer["Data"]["AgentInstanceId"]
        return instance


def ice(
    url: str, key_id: str = DEFAULT_ACCESS_KEY_ID, secret: str = DEFAULT_ACCESS_KEY_SECRET
) -> Any:
    """The official SDK's client pointed at the emulator."""
    config = Config(
        access_key_id=key_id,
        access_key_secret=secret,
        endpoint=url.removeprefix("http://"),
        protocol="http",
        read_timeout=5000,
        connect_timeout=5000,
    )
    return Client(config)


async def generate(client: Any, **fields: Any) -> Any:
    request = models.GenerateAIAgentCallRequest(
        aiagent_id=DEFAULT_AGENT,
        session_id="conv-7",
        user_data='{"call": "c1", "sig": "s=="}',
        user_id="u1",
    )
    for name, value in fields.items():
        setattr(request, name, value)
    return (await client.generate_aiagent_call_async(request)).body


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with Endpoint() as server:
        yield server


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    async with Hooks() as receiver:
        yield receiver


@pytest.fixture
async def zego(hooks: Hooks) -> AsyncIterator[VoiceEmulatorThread]:
    async with VoiceEmulatorThread("zego", callback_url=hooks.url(), retry_scale=0.01) as emu:
        yield emu


@pytest.fixture
def api(http: aiohttp.ClientSession, zego: VoiceEmulatorThread) -> ZegoClient:
    return ZegoClient(http, zego.url)


@pytest.fixture
async def aliyun(hooks: Hooks, endpoint: Endpoint) -> AsyncIterator[VoiceEmulatorThread]:
    async with VoiceEmulatorThread("aliyun", callback_url=hooks.url(), expire_scale=0.01) as emu:
        await emu.set_console(
            llm_base_url=endpoint.url + "/voice/main",
            llm_api_key=CONSOLE_KEY,
            callback_token=TOKEN,
        )
        yield emu


# -- ZEGO: the API ---------------------------------------------------------------------------------


async def test_zego_takes_signed_calls_and_refuses_bad_signatures_with_the_gateway_codes(
    api: ZegoClient, endpoint: Endpoint
) -> None:
    registered = await api.register(endpoint.url)
    assert (registered["Code"], registered["Data"]) == (0, None) and registered["RequestId"]
    assert (await api.register(endpoint.url))["Code"] == 410001008  # the agent exists
    stale = str(int(time.time()) - 601)
    cases = [
        ({"Signature": "0" * 32}, 100000005),
        ({"Timestamp": stale}, 100000004),
        ({"AppId": "42"}, 100000010),
        ({"SignatureVersion": "1.0"}, 100000014),
        ({"Action": "DescribeNothing"}, 100000007),
    ]
    for overrides, code in cases:
        answer = await api.call("RegisterAgent", {"AgentId": "other"}, **overrides)
        assert (answer["Code"], answer["Data"]) == (code, None), overrides
    wrong = ZegoClient(api.http, api.base, secret="not-the-secret")
    assert (await wrong.call("RegisterAgent", {"AgentId": "other"}))["Code"] == 100000005
    async with api.http.post(api.base + "/", params=api.query("RegisterAgent"), data=b"{") as resp:
        assert (await resp.json())["Code"] == 410000004  # not JSON


async def test_zego_checks_what_create_agent_instance_needs(
    api: ZegoClient, endpoint: Endpoint
) -> None:
    assert (await api.create())["Code"] == 410001009  # no such agent yet
    await api.call("RegisterAgent", {"AgentId": AGENT})  # no LLM of its own
    assert (await api.create())["Code"] == 410000003  # and none given
    llm = {"Url": endpoint.url, "ApiKey": LLM_KEY, "Model": "m"}
    bad: list[dict[str, Any]] = [
        {"UserId": "x" * 33, "LLM": llm},
        {"UserId": "user 1", "LLM": llm},
        {"RTC": {**RTC, "AgentUserId": "user_1"}, "LLM": llm},
        {"RTC": {k: v for k, v in RTC.items() if k != "RoomId"}, "LLM": llm},
        {"LLM": {"Url": endpoint.url, "ApiKey": LLM_KEY}},
        {"LLM": {"Model": "m", "ApiKey": LLM_KEY}},
        {"LLM": llm, "MessageHistory": {"SyncMode": 1, "Messages": [{"Role": "x", "Content": ""}]}},
    ]
    for fields in bad:
        assert (await api.create(**fields))["Code"] == 410000003, fields
    assert (await api.create(LLM=llm))["Code"] == 0


async def test_zego_allows_ten_live_instances_per_app(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread, hooks: Hooks
) -> None:
    await api.register(endpoint.url)
    instances = [
        await api.started(UserId=f"user_{n}", RTC={**RTC, "AgentUserId": f"agent_{n}"})
        for n in range(10)
    ]
    eleventh = {"UserId": "user_x", "RTC": {**RTC, "AgentUserId": "agent_x"}}
    assert (await api.create(**eleventh))["Code"] == 410000011
    gone = await api.call("DeleteAgentInstance", {"AgentInstanceId": instances[0]})
    assert gone["Code"] == 0
    assert (await api.call("DeleteAgentInstance", {"AgentInstanceId": instances[0]}))[
        "Code"
    ] == 410001002
    assert (await api.create(**eleventh))["Code"] == 0
    await hooks.until(lambda r: len(r) >= 1)
    (deleted,) = hooks.events("AgentInstanceDeleted")
    assert (deleted["AgentInstanceId"], deleted["Data"]["Code"]) == (instances[0], 0)
    # a new instance taking an agent user id in use pushes the older one out of the room (1203)
    await api.started(UserId="user_y", RTC={**RTC, "AgentUserId": "agent_5"})
    await hooks.until(lambda r: len(r) >= 2)
    assert hooks.events("AgentInstanceDeleted")[1]["Data"]["Code"] == 1203
    calls = await zego.instances()
    assert sum(c["active"] for c in calls) == 10


# -- ZEGO: the agent -------------------------------------------------------------------------------


async def test_zego_agent_sends_zegos_request_with_its_own_window_of_context(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread
) -> None:
    await api.register(
        endpoint.url + "/voice/main/chat/completions",
        SystemPrompt="Be brief.",
        Temperature=0.3,
        Params={"max_tokens": 64},
        AddAgentInfo=True,
        AgentExtraInfo={"conv": "c-42"},
    )
    seeded = [{"Role": "user" if n % 2 == 0 else "assistant", "Content": f"m{n}"} for n in range(6)]
    instance = await api.started(
        MessageHistory={"SyncMode": 1, "Messages": seeded, "WindowSize": 4}
    )
    before = int(time.time() * 1000)
    first = await zego.say("hello")
    second = await zego.say("and then")
    assert first["answer"] == "You said hello. Anything else? " and first["status"] == 200
    assert first["chunks"] == 6 and first["first_chunk_ms"] is not None
    one, two = endpoint.asked
    assert one.path == "/voice/main/chat/completions"
    assert one.headers["Authorization"] == f"Bearer {LLM_KEY}"
    body = one.body
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == (
        "voice-model",
        0.3,
        0.9,
        64,
    )
    assert body["stream"] is True
    assert one.messages == [
        {"role": "system", "content": "Be brief."},
        *({"role": m["Role"], "content": m["Content"]} for m in seeded[-4:]),
        {"role": "user", "content": "hello"},
    ]
    assert two.messages[1:] == [
        {"role": "user", "content": "m4"},
        {"role": "assistant", "content": "m5"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first["answer"]},
        {"role": "user", "content": "and then"},
    ]
    info = body["agent_info"]
    assert info["room_id"] == "room_1" and info["agent_instance_id"] == instance
    assert (info["agent_user_id"], info["user_id"]) == ("agent_1", "user_1")
    assert info["round_id"] == first["round"] and before <= info["time_stamp"] <= time.time() * 1000
    assert second["round"] - first["round"] >= 2  # ascending, not contiguous
    assert body["agent_extra_info"] == {"conv": "c-42"}
    (shown, _) = await zego.llm_requests(instance)
    assert shown.headers["Authorization"] == "Bearer ****6789"  # masked to its last four
    assert LLM_KEY not in str(await zego.calls())  # nor kept in the API call record


async def test_zego_window_of_zero_sends_no_history(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread
) -> None:
    await api.register(endpoint.url)
    await api.started(
        MessageHistory={
            "SyncMode": 1,
            "WindowSize": 0,
            "Messages": [{"Role": "user", "Content": "old"}],
        }
    )
    await zego.say("one")
    await zego.say("two")
    assert [a.messages for a in endpoint.asked] == [
        [{"role": "user", "content": "one"}],
        [{"role": "user", "content": "two"}],
    ]


@pytest.mark.parametrize("provider", ["zego", "aliyun"])
async def test_a_badly_framed_or_refused_answer_is_not_said_nor_remembered(
    provider: str,
    api: ZegoClient,
    endpoint: Endpoint,
    zego: VoiceEmulatorThread,
    aliyun: VoiceEmulatorThread,
) -> None:
    if provider == "zego":
        await api.register(endpoint.url)
        await api.started()
        emu = zego
    else:
        await generate(ice(aliyun.url))
        emu = aliyun
    endpoint.script.extend(["bad", 401])
    bad = await emu.say("first")
    refused = await emu.say("second")
    fine = await emu.say("third")
    assert bad["answer"] is None and bad["error"].startswith("framing: the stream ended without")
    assert (refused["answer"], refused["status"]) == (None, 401)
    assert refused["error"].startswith("HTTP 401")
    assert fine["answer"] == "You said third. Anything else? "
    users_only = [m for m in endpoint.asked[2].messages if m["role"] != "system"]
    assert users_only == [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "user", "content": "third"},
    ]
    (call,) = await emu.instances()
    assert [t["error"] != "" for t in call["turns"]] == [True, True, False]
    assert [r.status for r in await emu.llm_requests()] == [200, 401, 200]


async def test_zego_interruption_keeps_the_played_part_and_calls_back_signed(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread, hooks: Hooks
) -> None:
    await api.register(endpoint.url)
    instance = await api.started(CallbackConfig={"Interrupted": 1})
    said = await zego.say("hello")
    turn = await zego.interrupt(8)
    assert (turn["interrupted"], turn["played"]) == (True, "You said")
    await zego.say("sorry")
    assert endpoint.asked[1].messages[-2:] == [
        {"role": "assistant", "content": "You said"},
        {"role": "user", "content": "sorry"},
    ]
    await hooks.until(lambda r: len(r) >= 1)
    (hook,) = hooks.received
    body = hook.body
    assert body["Event"] == "Interrupted" and body["AgentInstanceId"] == instance
    assert body["Data"] == {"Round": said["round"], "Reason": 1, "PlayedText": "You said"}
    assert body["AppId"] == int(DEFAULT_APP_ID) and body["RoomId"] == "room_1"
    assert abs(body["Timestamp"] - time.time() * 1000) < 60_000  # milliseconds
    assert body["Signature"] == zego_signature(DEFAULT_SECRET, body["Timestamp"], body["Nonce"])
    assert body["Signature"] != zego_signature("other", body["Timestamp"], body["Nonce"])


async def test_zego_sends_only_the_callbacks_asked_for_and_retries_them(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread, hooks: Hooks
) -> None:
    await api.register(endpoint.url)
    await api.started(CallbackConfig={"ASRResult": 1, "LLMResult": 1})
    said = await zego.say("hello")
    await zego.interrupt(3)  # Interrupted was not asked for
    await hooks.until(lambda r: len(r) >= 3)
    hooks.statuses.extend([500, 503])  # the next callback fails twice, then passes
    await zego.hangup()
    await hooks.until(lambda r: len(r) >= 6)
    events = sorted(
        (h.body["Sequence"], h.body["Event"], h.body["Data"].get("Text")) for h in hooks.received
    )
    assert list(dict.fromkeys(events)) == [
        (1, "ASRResult", "hello"),
        (2, "LLMResult", "You said hello."),
        (3, "LLMResult", "Anything else?"),
        (4, "AgentInstanceDeleted", None),
    ]
    assert [h.body["Sequence"] for h in hooks.received[:3]] == [1, 2, 3]  # sent in order
    assert {h.body["Data"]["Round"] for h in hooks.received[:3]} == {said["round"]}
    attempts = await zego.callback_attempts("AgentInstanceDeleted")
    assert [(a.attempt, a.status) for a in attempts] == [(0, 500), (1, 503), (2, 200)]
    assert len({str(h.body) for h in hooks.received[3:]}) == 1  # a retry is the same callback
    deleted = hooks.events("AgentInstanceDeleted")[0]["Data"]
    assert deleted["Code"] == 1202 and deleted["LatencyData"]["LLMTTFT"] >= 0  # the caller left
    with pytest.raises(LookupError, match="no active call"):
        await zego.say("anyone?")


async def test_repeat_sends_the_same_round_again_and_keeps_the_new_answer_once(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread
) -> None:
    await api.register(endpoint.url, AddAgentInfo=True)
    await api.started()
    endpoint.script.extend(["first try", "second try"])
    said = await zego.say("hello")
    again = await zego.repeat()
    await zego.say("next")
    first, repeated, third = endpoint.asked
    assert repeated.body == first.body and again["round"] == said["round"]
    assert again["answer"] == "second try "
    assert third.messages == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "second try "},
        {"role": "user", "content": "next"},
    ]
    assert [r.repeat for r in await zego.llm_requests()] == [False, True, False]


# -- Alibaba ---------------------------------------------------------------------------------------


async def test_aliyun_generate_describe_and_stop_through_the_sdk(
    aliyun: VoiceEmulatorThread, hooks: Hooks
) -> None:
    client = ice(aliyun.url)
    started = await generate(client)
    assert started.instance_id and started.channel_id and started.token and started.request_id
    assert (started.user_id, bool(started.aiagent_user_id)) == ("u1", True)
    describe = models.DescribeAIAgentInstanceRequest(instance_id=started.instance_id)
    running = (await client.describe_aiagent_instance_async(describe)).body.instance
    assert (running.status, running.session_id) == ("Executing", "conv-7")
    assert running.user_data == '{"call": "c1", "sig": "s=="}'
    stop = models.StopAIAgentInstanceRequest(instance_id=started.instance_id)
    assert (await client.stop_aiagent_instance_async(stop)).body.request_id
    await client.stop_aiagent_instance_async(stop)  # stopped already: no second callback
    finished = (await client.describe_aiagent_instance_async(describe)).body.instance
    assert finished.status == "Finished"
    await hooks.until(lambda r: len(r) >= 1)
    (hook,) = hooks.received
    assert hook.headers["Authorization"] == TOKEN  # the console's token, verbatim
    body = hook.body
    assert (body["event"], body["instanceId"], body["aiAgentId"]) == (
        "agent_stop",
        started.instance_id,
        DEFAULT_AGENT,
    )
    assert (
        body["userData"] == running.user_data
        and body["extendData"]["channelId"] == started.channel_id
    )
    assert body["timestamp"].endswith("Z") and body["code"] == 0
    with pytest.raises(ClientException) as unknown:
        await client.stop_aiagent_instance_async(
            models.StopAIAgentInstanceRequest(instance_id="nope")
        )
    assert (unknown.value.status_code, unknown.value.code) == (404, "InvalidInstanceId.NotFound")
    runtime = models.AIAgentRuntimeConfig(
        voice_chat=models.AIAgentRuntimeConfigVoiceChat(
            agent_user_id="a1", channel_id="ch-9", auth_token="t"
        )
    )
    own = models.StartAIAgentInstanceRequest(
        aiagent_id=DEFAULT_AGENT, runtime_config=runtime, session_id="conv-8"
    )
    assert (await client.start_aiagent_instance_async(own)).body.instance_id
    (_, mine) = await aliyun.instances()
    assert (mine["channel_id"], mine["session_id"], mine["active"]) == ("ch-9", "conv-8", True)


async def test_aliyun_refuses_unknown_keys_bad_signatures_and_bad_parameters(
    aliyun: VoiceEmulatorThread, http: aiohttp.ClientSession
) -> None:
    cases = [
        (ice(aliyun.url, key_id="LTAI-unknown"), 404, "InvalidAccessKeyId.NotFound"),
        (ice(aliyun.url, secret="wrong"), 400, "SignatureDoesNotMatch"),
    ]
    for client, status, code in cases:
        with pytest.raises(ClientException) as refused:
            await generate(client)
        assert (refused.value.status_code, refused.value.code) == (status, code)
    for fields in ({"aiagent_id": "no-such-agent"}, {"expire": 604801}, {"user_id": "u" * 65}):
        with pytest.raises(ClientException) as refused:
            await generate(ice(aliyun.url), **fields)
        assert refused.value.status_code in (400, 404), fields
    headers = {"x-acs-action": "GenerateAIAgentCall", "x-acs-version": "2020-11-09"}
    async with http.post(aliyun.url + "/", headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["Code"] == "IncompleteSignature"
    assert await aliyun.instances() == []


async def test_aliyun_agent_sends_the_workflows_request(
    aliyun: VoiceEmulatorThread, endpoint: Endpoint
) -> None:
    started = await generate(ice(aliyun.url))
    first = await aliyun.say("hello")
    await aliyun.say("more")
    one, two = endpoint.asked
    assert one.path == "/voice/main/chat/completions"
    assert one.headers["Authorization"] == f"Bearer {CONSOLE_KEY}"
    assert set(one.body) == {"model", "stream", "messages", "extendData"}
    assert (one.body["model"], one.body["stream"]) == ("channeld-voice", True)
    assert one.body["extendData"] == {
        "instanceId": started.instance_id,
        "channelId": started.channel_id,
        "sentenceId": 1,
        "userData": '{"call": "c1", "sig": "s=="}',
    }
    assert two.body["extendData"]["sentenceId"] == 2 and first["round"] == 1
    assert two.messages == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first["answer"]},
        {"role": "user", "content": "more"},
    ]


async def test_aliyun_sends_at_most_twenty_records_of_history(
    aliyun: VoiceEmulatorThread, endpoint: Endpoint
) -> None:
    await generate(ice(aliyun.url))
    for n in range(12):  # 24 records, none of them sent to the endpoint
        await aliyun.say(f"q{n}", unseen=True, answer=f"a{n}")
    await aliyun.say("now")
    (asked,) = endpoint.asked
    assert len(asked.messages) == 21
    assert asked.messages[0] == {"role": "user", "content": "q2"}
    assert asked.messages[-2:] == [
        {"role": "assistant", "content": "a11"},
        {"role": "user", "content": "now"},
    ]
    assert asked.body["extendData"]["sentenceId"] == 13


async def test_aliyun_marks_an_interrupted_answer_in_the_next_request(
    aliyun: VoiceEmulatorThread, endpoint: Endpoint
) -> None:
    started = await generate(ice(aliyun.url))
    await aliyun.say("hello")
    await aliyun.interrupt(5)
    await aliyun.say("wait")
    assert endpoint.asked[1].messages[-2] == {"role": "assistant", "content": "You s" + INTERRUPTED}
    listing = models.ListAIAgentDialoguesRequest(
        session_id="conv-7", start_time=0, end_time=2**62, order="ASC"
    )
    dialogues = (await ice(aliyun.url).list_aiagent_dialogues_async(listing)).body.dialogues
    assert [(d.producer, d.text) for d in dialogues][:2] == [("user", "hello"), ("agent", "You s")]
    with pytest.raises(ValueError, match="played_chars"):
        await aliyun.interrupt(500, instance_id=started.instance_id)


async def test_aliyun_call_ends_when_its_expire_passes(
    aliyun: VoiceEmulatorThread, hooks: Hooks
) -> None:
    started = await generate(ice(aliyun.url), expire=3)  # 3 s, scaled to 30 ms
    await hooks.until(lambda r: len(r) >= 1)
    (stop,) = hooks.events("agent_stop")
    assert (stop["instanceId"], stop["message"]) == (started.instance_id, "expired")
    (call,) = await aliyun.instances()
    assert (call["active"], call["ended"]) == (False, "expired")


async def test_aliyun_dialogues_page_through_the_sdk(
    aliyun: VoiceEmulatorThread, hooks: Hooks
) -> None:
    client = ice(aliyun.url)
    before = int(time.time() * 1000)
    await generate(client)
    await aliyun.say("seen one")
    for n in range(3):
        await aliyun.say(f"unseen {n}", unseen=True, answer=f"reply {n}")
    await aliyun.say("seen two")
    await aliyun.hangup()
    after = int(time.time() * 1000)

    async def page(number: int, size: int, order: str, end: int = after) -> list[Any]:
        request = models.ListAIAgentDialoguesRequest(
            session_id="conv-7",
            start_time=before,
            end_time=end,
            page_number=number,
            page_size=size,
            order=order,
        )
        body = (await client.list_aiagent_dialogues_async(request)).body
        return list(body.dialogues)

    pages = [await page(n, 4, "ASC") for n in (1, 2, 3)]
    assert [len(p) for p in pages] == [4, 4, 2]
    flat = [d for p in pages for d in p]
    assert [d.producer for d in flat] == ["user", "agent"] * 5
    assert [d.text for d in flat[::2]] == [
        "seen one",
        "unseen 0",
        "unseen 1",
        "unseen 2",
        "seen two",
    ]
    assert flat[3].text == "reply 0" and {d.source for d in flat} == {"call"}
    assert flat[0].round_id == flat[1].round_id == "1" and flat[-1].round_id == "5"
    assert len({d.dialogue_id for d in flat}) == 10
    newest = await page(1, 100, "DESC")
    assert [d.dialogue_id for d in newest] == [d.dialogue_id for d in reversed(flat)]
    assert await page(1, 20, "ASC", end=before - 1) == []
    with pytest.raises(ClientException) as refused:
        await page(1, 101, "ASC")
    assert (refused.value.status_code, refused.value.code) == (400, "InvalidParameter")
    await hooks.until(lambda r: len(r) >= 1)
    assert [h.body["event"] for h in hooks.received] == ["agent_stop"]  # chat_record is off


async def test_aliyun_chat_record_callbacks_when_the_console_asks(
    aliyun: VoiceEmulatorThread, hooks: Hooks
) -> None:
    await aliyun.set_console(chat_record=True)
    await generate(ice(aliyun.url))
    await aliyun.say("hello")
    await hooks.until(lambda r: len(r) >= 1)
    (record,) = hooks.events("chat_record")
    assert record["extendData"]["sentenceId"] == 1
    user, agent = record["data"]["dialogues"]
    assert (user["producer"], user["text"], user["roundId"]) == ("user", "hello", "1")
    assert (agent["producer"], agent["text"]) == ("agent", "You said hello. Anything else? ")


# -- control plane, command and chat ---------------------------------------------------------------


async def test_the_control_plane_drives_a_call_over_http(
    api: ZegoClient, endpoint: Endpoint, zego: VoiceEmulatorThread, http: aiohttp.ClientSession
) -> None:
    control = zego.url + "/_emulator/voice/"
    async with http.post(control + "say", json={"text": "hi"}) as resp:
        assert resp.status == 409  # no active call
    await api.register(endpoint.url)
    instance = await api.started()
    async with http.post(control + "say", json={"text": "hi"}) as resp:
        said = await resp.json()
    assert said["answer"] == "You said hi. Anything else? " and said["status"] == 200
    async with http.post(control + "interrupt", json={"played_chars": "3"}) as resp:
        assert resp.status == 400
    async with http.post(control + "say", json={"text": "hi", "instance_id": "nope"}) as resp:
        assert resp.status == 404
    async with http.get(control + "requests") as resp:
        (request,) = await resp.json()
    assert request["headers"]["Authorization"] == "Bearer ****6789"
    assert request["body"]["messages"][-1] == {"role": "user", "content": "hi"}
    async with http.post(
        control + "console", json={"callback_url": "http://127.0.0.1:9/x"}
    ) as resp:
        assert (await resp.json())["callback_url"] == "http://127.0.0.1:9/x"
    async with http.post(control + "console", json={"no_such": 1}) as resp:
        assert resp.status == 400
    async with http.post(control + "hangup", json={}) as resp:
        assert (await resp.json())["active"] is False
    async with http.get(control + "calls") as resp:
        listing = await resp.json()
    assert listing["provider"] == "zego"
    (call,) = listing["calls"]
    assert (call["instance_id"], call["user_id"], call["llm_url"]) == (
        instance,
        "user_1",
        endpoint.url,
    )
    assert call["turns"] == [
        {
            "round": said["round"],
            "user": "hi",
            "agent": said["answer"],
            "interrupted": False,
            "played": None,
            "error": "",
            "seen": True,
        }
    ]


async def test_emulate_voice_lists_both_providers_and_serves_the_chosen_one(
    http: aiohttp.ClientSession,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "emulate",
        "voice",
        "--help",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert "{zego,aliyun}" in out.decode() and "--llm-base-url" in out.decode()
    async with emulate("voice", "--provider", "aliyun") as (printed, url):
        assert (
            "Alibaba Cloud IMS AI agent emulator" in printed
            and "[channels.voice.aliyun]" in printed
        )
        async with http.get(url + "/_emulator/state") as resp:
            state = await resp.json()
    assert (state["kind"], state["provider"]) == ("voice", "aliyun")


async def test_chat_voice_speaks_into_the_latest_active_call(
    api: ZegoClient,
    endpoint: Endpoint,
    zego: VoiceEmulatorThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def lines(*typed: str) -> AsyncIterator[str]:
        for line in typed:
            yield line + "\n"

    assert await voice_chat(zego.url, lines=lines("hello"), out=io.StringIO()) == EXIT_NO_CALL
    assert "POST /api/v1/voice/calls" in capsys.readouterr().err
    await api.register(endpoint.url)
    await api.started()
    endpoint.script.extend(["Hello there, caller.", "bad"])
    screen = io.StringIO()
    typed = lines("hello", "/interrupt 5", "again", "/repeat", "/hangup", "never sent")
    assert await voice_chat(zego.url, lines=typed, out=screen) == 0
    shown = screen.getvalue()
    assert "agent> Hello there, caller. \n" in shown
    assert "(you spoke over the agent after 'Hello')" in shown
    assert "(the agent says nothing: framing:" in shown
    assert "agent> You said again. Anything else? \n" in shown  # the repeat, answered this time
    assert "(you hung up: the call ended)" in shown
    (call,) = await zego.instances()
    assert call["active"] is False and [t["user"] for t in call["turns"]] == ["hello", "again"]
    # plain `channeld chat` finds out it talks to a voice emulator
    await api.started(UserId="user_2")
    screen = io.StringIO()
    assert await text_chat(zego.url, lines=lines("ping"), out=screen, tty=False) == 0
    assert "agent> You said ping. Anything else?" in screen.getvalue()


async def test_an_emulator_serves_on_the_callers_loop(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    emu = ZegoAgentEmulator(["other-agent"])
    url = await emu.start()
    try:
        api = ZegoClient(http, url)
        await api.register(endpoint.url)
        await api.started()
        said = await emu.say("hello")
        agents = list(emu.state.apps)
    finally:
        await emu.stop()
    assert said["answer"] == "You said hello. Anything else? "
    assert agents == ["other-agent", AGENT] and emu.url == url


async def test_channelds_own_clients_and_callback_readers_accept_the_emulators(
    endpoint: Endpoint, hooks: Hooks, zego: VoiceEmulatorThread, aliyun: VoiceEmulatorThread
) -> None:
    llm = {"Url": endpoint.url + "/chat/completions", "ApiKey": LLM_KEY, "Model": "m"}
    zego_api = ZegoAgentApi(
        app_id=int(DEFAULT_APP_ID), server_secret=DEFAULT_SECRET, api_base=zego.url
    )
    try:
        assert await zego_api.register_agent(AGENT, name="Ada", llm=llm) is True
        assert await zego_api.register_agent(AGENT, name="Ada", llm=llm) is False
        instance = await zego_api.create_instance(
            agent_id=AGENT,
            user_id="user_1",
            rtc=RTC,
            llm=llm,
            message_history={"SyncMode": 1, "Messages": []},
            callback_config={"Interrupted": 1},
        )
        await zego.say("hello")
        await zego.interrupt(3)
        await zego_api.delete_instance(instance)
        await zego_api.delete_instance(instance)  # gone already: deleted all the same
    finally:
        await zego_api.aclose()
    ali_api = AliyunVoiceApi(
        access_key_id=DEFAULT_ACCESS_KEY_ID,
        access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
        region="cn-shanghai",
        endpoint=aliyun.url,
    )
    try:
        call = await ali_api.generate_call(
            agent_id=DEFAULT_AGENT,
            session_id="conv-9",
            user_id="u9",
            user_data="ref",
            expire_seconds=60,
        )
        await aliyun.say("hi")
        await ali_api.stop_instance(call.instance_id)
        await ali_api.stop_instance("never-started")
        dialogues = await ali_api.list_dialogues(session_id="conv-9", start_ms=0, end_ms=2**62)
    finally:
        await ali_api.aclose()
    assert [(d.role, d.text) for d in dialogues] == [
        ("user", "hi"),
        ("assistant", "You said hi. Anything else? "),
    ]
    await hooks.until(lambda r: len(r) >= 3)
    now = time.time()
    zego_events: list[Any] = []
    ali_events: list[Any] = []
    for hook in hooks.received:
        headers = {k.lower(): v for k, v in hook.headers.items()}
        callback = Callback("", headers, json.dumps(hook.body).encode(), hook.body)
        if "Event" in hook.body:
            check_zego(callback, secret=DEFAULT_SECRET, now=now)
            zego_events.append(parse_zego(hook.body))
        else:
            check_aliyun(callback, token=TOKEN, now=now)
            ali_events.extend(parse_aliyun(hook.body))
    (turn,) = (await zego.instances())[0]["turns"]
    assert zego_events == [
        TurnInterrupted(instance, str(turn["round"]), "You"),
        CallEnded(instance, "deleted"),
    ]
    assert ali_events == [CallEnded(call.instance_id, "stopped: stop")]  # the console's words
