"""The voice clouds' product clients against loopback fakes on port 0.

ZEGO AI Agent: the signed query and the bodies on the wire, "exists" and "gone" codes, business
errors by code, https unless loopback. Alibaba IMS: the real `alibabacloud-ice20201109` SDK
against a fake that dispatches on `x-acs-action` and reads the query string like Alibaba, answers
like Alibaba (400 InvalidParameter, Throttling, 5xx, silence), pages of dialogues; one attempt per
call, bounded by the timeout, and the SDK's work done off the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from channels.voice.aliyun import PAGE_SIZE, AliyunCall, AliyunVoiceApi
from channels.voice.zego import ZegoAgentApi
from common.errors import (
    AuthError,
    ChannelError,
    ConfigError,
    PermanentError,
    RateLimited,
    TransientError,
)

APP_ID = 1234567890
ZEGO_SECRET = "9193cc662a4c0ec135ec71fb57194b38"
NOW = 1_765_510_379.0
LLM_KEY = "call-secret-5f2a9c"
AK_ID = "LTAI5tExampleKeyId"
AK_SECRET = "ak-secret-value-9d8e7f"
LLM = {
    "Url": "https://bot.example.com/voice/main/chat/completions",
    "ApiKey": LLM_KEY,
    "Model": "m",
}
RTC = {"RoomId": "r1", "AgentStreamId": "as1", "AgentUserId": "agent1", "UserStreamId": "us1"}


@dataclass
class Seen:
    """One request the fake received."""

    action: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


Handler = Callable[[Seen], Awaitable[web.StreamResponse]]


@dataclass
class Fake:
    """A loopback HTTP server on port 0: records each POST / and answers through `handler`."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    async def _post(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        action = request.headers.get("x-acs-action") or request.query.get("Action", "")
        seen = Seen(action, dict(request.query), dict(request.headers), body)
        self.seen.append(seen)
        return await self.handler(seen)

    async def stall(self) -> web.StreamResponse:
        """Never answers (until the fake stops)."""
        await self.stopping.wait()
        return web.json_response({})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Fake]]]:
    fakes: list[Fake] = []

    async def start(handler: Handler) -> Fake:
        fake = Fake(handler)
        app = web.Application()
        app.router.add_post("/", fake._post)
        fake.runner = web.AppRunner(app, access_log=None)
        await fake.runner.setup()
        await web.TCPSite(fake.runner, "127.0.0.1", 0).start()
        fake.url = f"http://127.0.0.1:{fake.runner.addresses[0][1]}"
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.stopping.set()
        assert fake.runner is not None
        await fake.runner.cleanup()


# -- ZEGO AI Agent -----------------------------------------------------------------------------


class ZegoCloud:
    """ZEGO's AI Agent API as far as channeld uses it: signed calls, agents, instances."""

    def __init__(self) -> None:
        self.agents: set[str] = set()
        self.instances: set[str] = set()
        self.faults: dict[str, web.Response] = {}

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        q = seen.query
        expected = hashlib.md5(  # noqa: S324 - ZEGO's scheme, computed here independently
            f"{q.get('AppId')}{q.get('SignatureNonce')}{ZEGO_SECRET}{q.get('Timestamp')}".encode()
        ).hexdigest()
        if q.get("Signature") != expected or q.get("SignatureVersion") != "2.0":
            return _zego(100000005, "signature error")
        if seen.action in self.faults:
            return self.faults[seen.action]
        body = seen.body
        if seen.action == "RegisterAgent":
            if body["AgentId"] in self.agents:
                return _zego(410001008, "智能体已存在")
            self.agents.add(body["AgentId"])
            return _zego(0, "success")
        if seen.action == "CreateAgentInstance":
            instance = f"19121229184526{len(self.instances):05d}"
            self.instances.add(instance)
            return _zego(0, "Success", {"AgentInstanceId": instance})
        if seen.action == "DeleteAgentInstance":
            if body["AgentInstanceId"] not in self.instances:
                return _zego(410001002, "未找到智能体实例")
            self.instances.discard(body["AgentInstanceId"])
            return _zego(0, "success")
        return _zego(100000007, "unsupported Action")


def _zego(code: int, message: str, data: Any = None) -> web.Response:
    return web.json_response({"Code": code, "Message": message, "RequestId": "r-1", "Data": data})


def zego_client(url: str, secret: str = ZEGO_SECRET, timeout: float = 3.0) -> ZegoAgentApi:
    return ZegoAgentApi(
        app_id=APP_ID, server_secret=secret, api_base=url, wall_clock=lambda: NOW, timeout=timeout
    )


async def test_zego_calls_are_signed_and_carry_the_bodies_asked_for(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    cloud = ZegoCloud()
    fake = await serve(cloud)
    api = zego_client(fake.url)
    try:
        assert await api.register_agent("channeld-voice", name="Voice", llm=LLM) is True
        assert await api.register_agent("channeld-voice", name="Voice", llm=LLM) is False
        instance = await api.create_instance(
            agent_id="channeld-voice",
            user_id="u_42",
            rtc=RTC,
            llm={**LLM, "AddAgentInfo": True, "AgentExtraInfo": {"call": "c1"}},
            tts={"Vendor": "CosyVoice", "Params": {"voice": "longxiaochun"}},
            message_history={"SyncMode": 1, "Messages": [], "WindowSize": 4},
            callback_config={"Interrupted": 1},
        )
        await api.delete_instance(instance)
        await api.delete_instance(instance)  # gone already: 410001002 counts as deleted
    finally:
        await api.aclose()
    assert [s.action for s in fake.seen] == [
        "RegisterAgent",
        "RegisterAgent",
        "CreateAgentInstance",
        "DeleteAgentInstance",
        "DeleteAgentInstance",
    ]
    nonces = {s.query["SignatureNonce"] for s in fake.seen}
    assert len(nonces) == len(fake.seen) and all(len(n) == 16 for n in nonces)
    assert all(int(n, 16) >= 0 for n in nonces)
    assert {s.query["AppId"] for s in fake.seen} == {str(APP_ID)}
    assert {s.query["Timestamp"] for s in fake.seen} == {str(int(NOW))}
    assert fake.seen[0].body == {"AgentId": "channeld-voice", "Name": "Voice", "LLM": LLM}
    create = fake.seen[2].body
    assert create["UserId"] == "u_42" and create["RTC"] == RTC
    assert create["LLM"]["AgentExtraInfo"] == {"call": "c1"}
    assert create["TTS"]["Vendor"] == "CosyVoice" and "ASR" not in create
    assert "AdvancedConfig" not in create
    assert create["MessageHistory"] == {"SyncMode": 1, "Messages": [], "WindowSize": 4}
    assert create["CallbackConfig"] == {"Interrupted": 1}
    assert fake.seen[3].body == {"AgentInstanceId": instance}
    assert ZEGO_SECRET not in json.dumps([s.query for s in fake.seen])


async def test_an_instance_already_ending_counts_as_deleted(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    cloud = ZegoCloud()
    cloud.faults["DeleteAgentInstance"] = _zego(410001041, "graceful shutdown under way")
    fake = await serve(cloud)
    api = zego_client(fake.url)
    try:
        await api.delete_instance("1912122918452641792")
    finally:
        await api.aclose()
    assert len(fake.seen) == 1


@pytest.mark.parametrize(
    ("answer", "error", "says"),
    [
        (_zego(410000003, "参数无效"), PermanentError, "Code 410000003"),
        (_zego(410001009, "智能体未找到"), PermanentError, "410001009"),
        (_zego(410000011, "并发数量限制"), RateLimited, "410000011"),
        (_zego(410000001, "系统错误"), TransientError, "410000001"),
        (_zego(100000004, "签名过期"), TransientError, "clock"),
        (_zego(410000006, "未开通"), AuthError, "410000006"),
        (web.json_response({"Message": "busy"}, status=503), TransientError, "HTTP 503"),
        (web.json_response({}, status=403), AuthError, "HTTP 403"),
        (web.json_response({}, status=429, headers={"Retry-After": "7"}), RateLimited, "429"),
        (web.Response(text="<html>not json</html>"), TransientError, "not ZEGO's JSON"),
    ],
)
async def test_zego_failures_are_classified_by_code_without_secrets(
    serve: Callable[[Handler], Awaitable[Fake]],
    answer: web.Response,
    error: type[ChannelError],
    says: str,
) -> None:
    cloud = ZegoCloud()
    cloud.faults["CreateAgentInstance"] = answer
    fake = await serve(cloud)
    api = zego_client(fake.url)
    try:
        with pytest.raises(ChannelError) as caught:
            await api.create_instance(
                agent_id="a",
                user_id="u",
                rtc=RTC,
                llm=LLM,
                message_history={"SyncMode": 1},
                callback_config={},
            )
    finally:
        await api.aclose()
    assert type(caught.value) is error
    assert says in str(caught.value)
    if isinstance(caught.value, RateLimited) and "429" in says:
        assert caught.value.retry_after == 7.0


async def test_an_echoed_secret_or_call_key_is_masked(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    cloud = ZegoCloud()
    echo = f"bad LLM.ApiKey {LLM_KEY} for secret {ZEGO_SECRET}"
    cloud.faults["CreateAgentInstance"] = _zego(410000003, echo)
    fake = await serve(cloud)
    api = zego_client(fake.url)
    try:
        with pytest.raises(PermanentError) as caught:
            await api.create_instance(
                agent_id="a",
                user_id="u",
                rtc=RTC,
                llm=LLM,
                message_history={"SyncMode": 1},
                callback_config={},
            )
    finally:
        await api.aclose()
    text = str(caught.value)
    assert "410000003" in text and LLM_KEY not in text and ZEGO_SECRET not in text


async def test_a_wrong_secret_is_an_auth_error(serve: Callable[[Handler], Awaitable[Fake]]) -> None:
    fake = await serve(ZegoCloud())
    api = zego_client(fake.url, secret="f" * 32)
    try:
        with pytest.raises(AuthError, match="100000005"):
            await api.register_agent("a", name="n", llm=LLM)
    finally:
        await api.aclose()


async def test_a_silent_zego_fails_within_the_timeout(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    fake: Fake

    async def silent(_seen: Seen) -> web.StreamResponse:
        return await fake.stall()

    fake = await serve(silent)
    api = zego_client(fake.url, timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match="no answer within"):
            await api.delete_instance("i-1")
    finally:
        await api.aclose()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "base", ["http://aigc-aiagent-api.zegotech.cn", "http://10.0.0.5:8080", "ftp://127.0.0.1"]
)
def test_zego_api_base_must_be_https_unless_loopback(base: str) -> None:
    with pytest.raises(ConfigError, match="api_base"):
        ZegoAgentApi(app_id=APP_ID, server_secret=ZEGO_SECRET, api_base=base)


async def test_zego_accepts_https_and_loopback_and_refuses_calls_once_closed() -> None:
    ZegoAgentApi(
        app_id=APP_ID, server_secret=ZEGO_SECRET, api_base="https://aigc-aiagent-api.zegotech.cn"
    )
    api = ZegoAgentApi(app_id=APP_ID, server_secret=ZEGO_SECRET, api_base="http://127.0.0.1:9")
    await api.aclose()
    with pytest.raises(PermanentError, match="client closed"):
        await api.delete_instance("i-1")


# -- Alibaba IMS through the official SDK --------------------------------------------------------


class IceCloud:
    """Alibaba's ICE RPC API as the SDK speaks it: the action in `x-acs-action`, parameters in
    the query string (objects as JSON strings), JSON answers; errors as Alibaba writes them."""

    def __init__(self, dialogues: int = 0) -> None:
        self.faults: dict[str, list[web.Response]] = {}
        self.dialogues = [_dialogue(i) for i in range(dialogues)]

    def fail(self, action: str, status: int, code: str, **headers: str) -> None:
        body = {"RequestId": "5E4C-REQ", "HostId": "ice.cn-shanghai.aliyuncs.com", "Code": code}
        body["Message"] = f"{code} happened"
        self.faults.setdefault(action, []).append(
            web.json_response(body, status=status, headers=headers)
        )

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        assert seen.headers.get("x-acs-version") == "2020-11-09"
        assert seen.headers["Authorization"].startswith(f"ACS3-HMAC-SHA256 Credential={AK_ID},")
        assert AK_SECRET not in json.dumps([seen.query, seen.headers])
        if self.faults.get(seen.action):
            return self.faults[seen.action].pop(0)
        q = seen.query
        if seen.action == "GenerateAIAgentCall":
            return web.json_response(
                {
                    "RequestId": "req-g",
                    "InstanceId": "inst-1",
                    "ChannelId": "chan-1",
                    "Token": "rtc-join-token-secret",
                    "UserId": q.get("UserId", "generated"),
                    "AIAgentUserId": "agent-user-1",
                }
            )
        if seen.action == "StartAIAgentInstance":
            return web.json_response({"RequestId": "req-s", "InstanceId": "inst-2"})
        if seen.action == "StopAIAgentInstance":
            return web.json_response({"RequestId": "req-x"})
        if seen.action == "ListAIAgentDialogues":
            size, page = int(q["PageSize"]), int(q["PageNumber"])
            items = self.dialogues if q.get("Order") == "ASC" else self.dialogues[::-1]
            return web.json_response(
                {"RequestId": "req-l", "Dialogues": items[(page - 1) * size : page * size]}
            )
        return web.json_response(
            {"RequestId": "r", "Code": "InvalidAction.NotFound", "Message": "no such action"},
            status=404,
        )


def _dialogue(i: int) -> dict[str, Any]:
    producer = "user" if i % 2 == 0 else "agent"
    round_id: Any = i // 2 if i % 4 < 2 else str(i // 2)  # numbers and strings both occur
    return {
        "DialogueId": f"d{i}",
        "RoundId": round_id,
        "Producer": producer,
        "Text": f"text {i}",
        "Time": 1_765_510_000_000 + i,
        "Type": "normal",
        "Source": "call",
    }


def ice_client(endpoint: str | None, timeout: float = 3.0) -> AliyunVoiceApi:
    return AliyunVoiceApi(
        access_key_id=AK_ID,
        access_key_secret=AK_SECRET,
        region="cn-shanghai",
        endpoint=endpoint,
        timeout=timeout,
    )


async def test_generate_call_through_the_sdk(serve: Callable[[Handler], Awaitable[Fake]]) -> None:
    fake = await serve(IceCloud())
    api = ice_client(fake.url)
    try:
        call = await api.generate_call(
            agent_id="agent-abc",
            session_id="conv-42",
            user_id="u42",
            user_data='{"call":"c1","sig":"x"}',
            expire_seconds=1800,
        )
    finally:
        await api.aclose()
    assert call == AliyunCall(
        instance_id="inst-1",
        rtc_channel_id="chan-1",
        rtc_join_token="rtc-join-token-secret",
        rtc_user_id="u42",
        agent_user_id="agent-user-1",
        request_id="req-g",
    )
    assert "rtc-join-token-secret" not in repr(call)
    (seen,) = fake.seen
    assert seen.action == "GenerateAIAgentCall"
    assert seen.query == {
        "AIAgentId": "agent-abc",
        "SessionId": "conv-42",
        "UserId": "u42",
        "UserData": '{"call":"c1","sig":"x"}',
        "Expire": "1800",
    }  # no AgentConfig: the SDK would send empty lists over the console's agent


async def test_start_instance_sends_the_voice_runtime_as_json(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    fake = await serve(IceCloud())
    api = ice_client(fake.url)
    runtime = {"AgentUserId": "agent-7", "ChannelId": "room-7", "AuthToken": "agent-rtc-token"}
    try:
        instance = await api.start_instance(
            agent_id="agent-abc", session_id="conv-42", user_data="{}", runtime=runtime
        )
        with pytest.raises(PermanentError, match="AuthToken"):
            await api.start_instance(
                agent_id="a", session_id="s", user_data="", runtime={"ChannelId": "c"}
            )
    finally:
        await api.aclose()
    assert instance == "inst-2"
    (seen,) = fake.seen  # the incomplete runtime never left
    assert seen.query["AIAgentId"] == "agent-abc" and seen.query["SessionId"] == "conv-42"
    assert json.loads(seen.query["RuntimeConfig"]) == {"VoiceChat": runtime}
    assert "AgentConfig" not in seen.query


async def test_stop_counts_an_unknown_instance_as_stopped_and_refuses_a_bad_one(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    cloud = IceCloud()
    cloud.fail("StopAIAgentInstance", 404, "InvalidInstanceId.NotFound")
    cloud.fail("StopAIAgentInstance", 400, "InvalidParameter")
    fake = await serve(cloud)
    api = ice_client(fake.url)
    try:
        await api.stop_instance("gone")
        with pytest.raises(PermanentError) as caught:
            await api.stop_instance("bad id")
        await api.stop_instance("inst-1")
    finally:
        await api.aclose()
    assert "HTTP 400 InvalidParameter: InvalidParameter happened" in str(caught.value)
    assert "5E4C-REQ" in str(caught.value)
    assert [s.query["InstanceId"] for s in fake.seen] == ["gone", "bad id", "inst-1"]


@pytest.mark.parametrize(
    ("status", "code", "headers", "error"),
    [
        (400, "InvalidParameter", {}, PermanentError),
        (400, "Throttling.User", {}, RateLimited),
        (503, "Throttling", {"x-acs-retry-after": "2000"}, RateLimited),
        (404, "InvalidAccessKeyId.NotFound", {}, AuthError),
        (400, "SignatureDoesNotMatch", {}, AuthError),
        (403, "Forbidden.RAM", {}, AuthError),
        (500, "InternalError", {}, TransientError),
        (503, "ServiceUnavailable", {}, TransientError),
    ],
)
async def test_alibaba_errors_are_classified_and_tried_once(
    serve: Callable[[Handler], Awaitable[Fake]],
    status: int,
    code: str,
    headers: dict[str, str],
    error: type[ChannelError],
) -> None:
    cloud = IceCloud()
    cloud.fail("GenerateAIAgentCall", status, code, **headers)
    fake = await serve(cloud)
    api = ice_client(fake.url)
    try:
        with pytest.raises(ChannelError) as caught:
            await api.generate_call(
                agent_id="a", session_id="s", user_id="u", user_data="", expire_seconds=60
            )
    finally:
        await api.aclose()
    assert type(caught.value) is error
    text = str(caught.value)
    assert f"HTTP {status} {code}" in text
    assert AK_SECRET not in text and AK_ID not in text
    assert len(fake.seen) == 1  # never sent twice: a start is not idempotent
    if headers:
        assert isinstance(caught.value, RateLimited) and caught.value.retry_after == 2.0


async def test_a_silent_alibaba_fails_within_the_timeout_after_one_attempt(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    fake: Fake

    async def silent(_seen: Seen) -> web.StreamResponse:
        return await fake.stall()

    fake = await serve(silent)
    api = ice_client(fake.url, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match="aliyun ims GenerateAIAgentCall"):
            await api.generate_call(
                agent_id="a", session_id="s", user_id="u", user_data="", expire_seconds=60
            )
    finally:
        await api.aclose()
    assert time.monotonic() - started < 1.5
    assert len(fake.seen) == 1


async def test_an_answer_that_is_not_json_is_transient(
    serve: Callable[[Handler], Awaitable[Fake]],
) -> None:
    async def html(_seen: Seen) -> web.StreamResponse:
        return web.Response(text="<html>gateway</html>", status=502, content_type="text/html")

    fake = await serve(html)
    api = ice_client(fake.url)
    try:
        with pytest.raises(TransientError, match="no usable answer"):
            await api.stop_instance("inst-1")
    finally:
        await api.aclose()


@pytest.mark.parametrize(("count", "noise"), [(250, 1), (200, 0), (0, 0)])
async def test_list_dialogues_reads_every_page_oldest_first(
    serve: Callable[[Handler], Awaitable[Fake]], count: int, noise: int
) -> None:
    cloud = IceCloud(dialogues=count)
    cloud.dialogues[1:1] = [{"RoundId": 1, "Producer": "system", "Text": "not a turn"}] * noise
    fake = await serve(cloud)
    api = ice_client(fake.url)
    try:
        dialogues = await api.list_dialogues(session_id="conv-42", start_ms=1, end_ms=2)
    finally:
        await api.aclose()
    assert len(dialogues) == count  # a "system" sentence is left out
    assert [d.text for d in dialogues] == [f"text {i}" for i in range(count)]
    assert all(isinstance(d.round_id, str) for d in dialogues)
    if count:
        first, second = dialogues[0], dialogues[1]
        assert (first.role, first.round_id, first.source) == ("user", "0", "call")
        assert (second.role, second.time_ms) == ("assistant", 1_765_510_000_001)
    pages = (count + noise) // PAGE_SIZE + 1  # the last page is short (or empty)
    assert [s.query["PageNumber"] for s in fake.seen] == [str(n) for n in range(1, pages + 1)]
    assert {(s.query["PageSize"], s.query["Order"]) for s in fake.seen} == {("100", "ASC")}
    assert {(s.query["StartTime"], s.query["EndTime"]) for s in fake.seen} == {("1", "2")}


async def test_the_sdk_works_on_a_loop_of_its_own_off_channelds_loop(
    serve: Callable[[Handler], Awaitable[Fake]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # darabonba-core 1.0.9 reads the CA bundle for every HTTPS request: that must not happen on
    # the daemon's loop. Here TLS meets a plain-HTTP server, so the call fails after the read.
    threads: list[int] = []
    real = ssl.create_default_context

    def spy(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", spy)
    fake = await serve(IceCloud())
    api = ice_client(fake.url.removeprefix("http://"))  # a bare host: https
    try:
        with pytest.raises(TransientError):
            await api.stop_instance("inst-1")
    finally:
        await api.aclose()
    assert threads and threading.get_ident() not in threads


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("http://ice.cn-shanghai.aliyuncs.com", "https"),
        ("http://192.168.1.9:8080", "https"),
        ("https://ice.aliyuncs.com/path", "without a path"),
        ("ice.aliyuncs.com/path", "without a path"),
        ("user:pw@ice.aliyuncs.com", "userinfo"),
    ],
)
def test_the_endpoint_is_a_host_or_a_loopback_http_url(endpoint: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        ice_client(endpoint)


async def test_accepted_endpoints_and_what_a_closed_client_does() -> None:
    for endpoint in (None, "ice.cn-shanghai.aliyuncs.com", "https://ice.aliyuncs.com:443"):
        ice_client(endpoint)
    with pytest.raises(ConfigError, match="region"):
        AliyunVoiceApi(
            access_key_id=AK_ID, access_key_secret=AK_SECRET, region="x/../", endpoint=None
        )
    with pytest.raises(ConfigError, match="access_key"):
        AliyunVoiceApi(
            access_key_id="", access_key_secret=AK_SECRET, region="cn-shanghai", endpoint=None
        )
    api = ice_client("http://127.0.0.1:9")
    await api.aclose()
    with pytest.raises(PermanentError, match="client closed"):
        await api.stop_instance("inst-1")
