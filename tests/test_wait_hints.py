"""Every wait a remote hands out is capped at MAX_RETRY_AFTER: Retry-After, Feishu's ClientConfig.

The providers run under a real Supervisor against the platform emulators (or, for a bare 429, a
loopback server); the supervisor's sleep is the injected leaf, so no test waits for real.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from agents.openai_agent import OpenAIAgent
from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import DingTalkEmulator
from channels.dingtalk.provider import DingTalkProvider
from channels.feishu.config import FeishuChannelConfig
from channels.feishu.frames import ClientConfig
from channels.feishu.provider import FeishuProvider
from channels.model import ChannelState, InboundMessage
from channels.provider import ProviderFactory
from channels.supervisor import Supervisor
from common.errors import MAX_RETRY_AFTER, RateLimited, TransientError
from tests.agents_support import (
    RecordingSleep,
    collect,
    fake_llm_fixture,
    make_request,
    openai_config,
)
from tests.feishu_support import FEISHU_APP_ID, FEISHU_APP_SECRET, FeishuEmulatorThread
from tools.fake_llm import FakeLLM

HUGE = 999_999.0
DING_ID, DING_SECRET = "ding-hints", "ding-hints-secret"

__all__ = ["fake_llm_fixture"]


class StopAfter:
    """The supervisor's sleep: records each delay, returns at once, then parks after `count`."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.delays: list[float] = []
        self.reached = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) >= self.count:
            self.reached.set()
            await asyncio.Event().wait()  # until the supervisor is stopped


async def supervise(channel_id: str, build: ProviderFactory, sleeps: int) -> list[float]:
    """The delays the supervisor slept for its first `sleeps` back-offs."""
    sleep = StopAfter(sleeps)
    supervisor = Supervisor(channel_id, build, sink=ignore, sleep=sleep)
    supervisor.start()
    try:
        async with asyncio.timeout(10):
            await sleep.reached.wait()
    finally:
        await supervisor.stop()
    return sleep.delays


async def ignore(_message: InboundMessage) -> None:
    """An inbound sink: these tests never receive a message."""


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("hint", "kept"),
    [(HUGE, MAX_RETRY_AFTER), (math.inf, MAX_RETRY_AFTER), (7.5, 7.5), (-3.0, 0.0)],
)
def test_the_taxonomy_caps_every_hint(hint: float, kept: float) -> None:
    assert TransientError("x", hint).retry_after == kept
    assert RateLimited("x", hint).retry_after == kept


def test_a_hint_that_is_not_a_number_is_no_hint() -> None:
    assert RateLimited("x", math.nan).retry_after is None
    assert RateLimited("x").retry_after is None


@pytest.fixture
async def dingtalk() -> AsyncIterator[DingTalkEmulator]:
    emulator = DingTalkEmulator([(DING_ID, DING_SECRET)], ping_interval=None)
    await emulator.start()
    yield emulator
    await emulator.stop()


async def test_dingtalk_429_retry_after_is_capped(dingtalk: DingTalkEmulator) -> None:
    dingtalk.add_fault("/v1.0/gateway/connections/open", 429, retry_after=HUGE)
    config = DingTalkChannelConfig(
        id="ding", client_id=DING_ID, client_secret=DING_SECRET, api_base=dingtalk.url
    )
    delays = await supervise("ding", lambda sink: DingTalkProvider(config, sink), sleeps=1)
    assert delays == [MAX_RETRY_AFTER]


async def test_feishu_429_retry_after_is_capped() -> None:
    async def too_many(_request: web.Request) -> web.Response:
        body = {"code": 99991400, "msg": "request trigger frequency limit"}
        return web.json_response(body, status=429, headers={"Retry-After": f"{HUGE:g}"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", too_many)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        config = FeishuChannelConfig(
            id="fs", app_id="cli_x", app_secret="s", domain=f"http://127.0.0.1:{port}"
        )
        delays = await supervise("fs", lambda sink: FeishuProvider(config, sink), sleeps=1)
    finally:
        await runner.cleanup()
    assert delays == [MAX_RETRY_AFTER]


async def test_feishu_client_config_from_a_pong_is_capped() -> None:
    async with FeishuEmulatorThread(
        [(FEISHU_APP_ID, FEISHU_APP_SECRET)],
        ping_interval=0.05,
        reconnect_interval=1.0,
        reconnect_nonce=0.0,
    ) as emulator:
        config = FeishuChannelConfig(
            id="fs", app_id=FEISHU_APP_ID, app_secret=FEISHU_APP_SECRET, domain=emulator.url
        )
        sleep = StopAfter(2)
        connected = asyncio.Event()

        def on_state(_channel: str, state: ChannelState) -> None:
            # wakes the test before the session's first ping: its pong carries the config below
            if state is ChannelState.CONNECTED:
                connected.set()

        supervisor = Supervisor(
            "fs",
            lambda sink: FeishuProvider(config, sink),
            sink=ignore,
            sleep=sleep,
            on_state=on_state,
        )
        provider = supervisor.provider
        assert isinstance(provider, FeishuProvider)
        supervisor.start()
        try:
            async with asyncio.timeout(5):
                await connected.wait()
            await emulator.set_client_config(
                reconnect_interval=HUGE, reconnect_nonce=HUGE, ping_interval=HUGE
            )
            session = provider._session
            assert session is not None
            await wait_until(lambda: session.client_config.reconnect_interval == HUGE)
            # the pong's PingInterval paces our pings and the dead-socket watchdog
            assert session.ping_interval == MAX_RETRY_AFTER
            assert session.silence_limit <= MAX_RETRY_AFTER + 60
            # the session ends (ReconnectNonce), then discovery fails (ReconnectInterval)
            await emulator.refuse_connections()
            await emulator.drop(FEISHU_APP_ID)
            async with asyncio.timeout(10):
                await sleep.reached.wait()
        finally:
            await supervisor.stop()
    assert sleep.delays == [MAX_RETRY_AFTER, MAX_RETRY_AFTER]


async def test_agent_429_retry_after_is_capped(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(429, headers={"Retry-After": f"{HUGE:g}"})
    sleep = RecordingSleep()
    agent = OpenAIAgent("main", openai_config(fake_llm, timeout=5), sleep=sleep)
    try:
        with pytest.raises(RateLimited) as caught:
            await collect(agent, make_request())
    finally:
        await agent.aclose()
    assert caught.value.retry_after == MAX_RETRY_AFTER
    assert sleep.delays == []


def test_client_config_ignores_infinite_values() -> None:
    # Python's json accepts Infinity; int(inf) used to raise out of the pong handler
    data = json.loads('{"ReconnectCount": Infinity, "ReconnectInterval": Infinity}')
    assert ClientConfig().updated(data) == ClientConfig()
