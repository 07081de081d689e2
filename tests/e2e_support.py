"""A whole daemon against the threaded DingTalk emulator and the fake LLM, on loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from common.backoff import Backoff
from daemon.app import Daemon
from daemon.config import Settings, validate
from tests.agents_support import FAKE_LLM_KEY
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, DINGTALK_TEMPLATE
from tools.fake_llm import FakeLLM

CHANNEL = "dt"
FAST_BACKOFF = Backoff(initial=0.05, maximum=0.2, healthy_after=60)


def settings_for(
    tmp_path: Path,
    emulator_url: str,
    llm: FakeLLM | None,
    *,
    channel: dict[str, Any] | None = None,
    agent: dict[str, Any] | None = None,
    base_channel: dict[str, Any] | None = None,
) -> Settings:
    """Config for one channel on the emulator (DingTalk unless `base_channel` says otherwise),
    answering with the fake LLM or echo."""
    agent_config: dict[str, Any] = (
        {
            "type": "openai",
            "base_url": llm.url,
            "api_key": FAKE_LLM_KEY,
            "model": "fake-model",
            "timeout": 10,
            "first_token_timeout": 5,
            "max_retries": 2,
        }
        if llm is not None
        else {"type": "echo", "delay": 0.01}
    )
    agent_config.update(agent or {})
    channel_config: dict[str, Any] = (
        dict(base_channel)
        if base_channel
        else {
            "id": CHANNEL,
            "type": "dingtalk",
            "agent": "default",
            "client_id": DINGTALK_CLIENT_ID,
            "client_secret": DINGTALK_CLIENT_SECRET,
            "card_template_id": DINGTALK_TEMPLATE,
            "api_base": emulator_url,
            "card_update_interval": 0.05,
            "request_timeout": 3,
        }
    )
    channel_config.update(channel or {})
    return validate(
        {
            "daemon": {"state_dir": str(tmp_path), "log_level": "DEBUG", "graceful_timeout": 0},
            "admin": {"listen": "127.0.0.1:0"},
            "agents": {"default": agent_config},
            "channels": [channel_config],
        }
    )


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a cheap in-process predicate until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Stack:
    """A running daemon plus handles on its peers."""

    channel_id = CHANNEL

    def __init__(self, daemon: Daemon, emulator: Any, llm: FakeLLM | None) -> None:
        self.daemon = daemon
        self.emulator = emulator
        self.llm = llm

    @property
    def supervisor(self) -> Any:
        assert self.daemon.manager is not None
        return self.daemon.manager.supervisor(self.channel_id)

    def state(self) -> ChannelState:
        assert self.daemon.manager is not None
        return self.daemon.manager.status(self.channel_id).state

    async def connected(self, timeout: float = 10.0) -> None:
        await wait_until(lambda: self.state() is ChannelState.CONNECTED, timeout)

    def sample(self, name: str, **labels: str) -> float | None:
        """A sample of this channel's metrics, None while the series does not exist."""
        platform = str(self.supervisor.provider.platform)
        found: float | None = self.daemon.metrics.registry.get_sample_value(
            name, {"channel": self.channel_id, "platform": platform, **labels}
        )
        return found

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this channel's metrics (its series exist at zero once it has a state)."""
        found = self.sample(name, **labels)
        assert found is not None, f"no sample {name} {labels}"
        return found

    async def failed(self) -> str:
        """The channel's last error, once it has failed."""
        await wait_until(lambda: self.state() is ChannelState.FAILED)
        assert self.daemon.manager is not None
        return self.daemon.manager.status(self.channel_id).last_error or ""

    async def idle(self) -> None:
        """Every conversation worker has finished (the answer stored, the journal closed)."""
        assert self.daemon.manager is not None
        handler = self.daemon.manager.handler
        await wait_until(lambda: not handler.busy())

    async def say(self, text: str, **kwargs: Any) -> Any:
        sent = await self.emulator.send_user_message(DINGTALK_CLIENT_ID, text=text, **kwargs)
        assert sent.delivered, sent.reason
        return sent

    async def view(self, conversation_id: str) -> dict[str, Any]:
        view: dict[str, Any] | None = await self.emulator.chat_view(conversation_id)
        assert view is not None
        return view

    def is_bot(self, item: dict[str, Any]) -> bool:
        """Whether a chat view's item is the bot's."""
        return bool(item["kind"] != "user")

    async def bot_items(self, conversation_id: str) -> list[dict[str, Any]]:
        view = await self.emulator.chat_view(conversation_id)
        return [i for i in (view or {"items": []})["items"] if self.is_bot(i)]

    async def wait_bot_items(
        self,
        conversation_id: str,
        predicate: Callable[[list[dict[str, Any]]], object],
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                items = await self.bot_items(conversation_id)
                if predicate(items):
                    return items
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self.daemon.stop()


async def start_stack(
    tmp_path: Path, emulator: EmulatorThread, llm: FakeLLM | None, **overrides: Any
) -> Stack:
    daemon = Daemon(settings_for(tmp_path, emulator.url, llm, **overrides), backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, emulator, llm)
    return stack


@pytest.fixture
async def fake_llm_slow() -> AsyncIterator[FakeLLM]:
    """A fake LLM whose tokens arrive 30 ms apart, so cards visibly stream."""
    server = FakeLLM(api_key=FAKE_LLM_KEY, token_interval=0.03)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class DaemonProcess:
    """`channeld run` as a real child process, its log lines collected."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon",
            "run",
            "--config",
            str(self.config),
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode())

    async def wait_log(self, text: str) -> None:
        async with asyncio.timeout(30):
            while not any(text in line for line in self.lines):
                await asyncio.sleep(0.02)

    async def end(self, signum: int) -> int:
        assert self.process is not None and self._reader is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), 20)
        await self._reader
        return code


@asynccontextmanager
async def emulate(platform: str, *options: str) -> AsyncIterator[tuple[str, str]]:
    """`channeld emulate <platform>` on 127.0.0.1:0 as a child process, once it has printed its
    control plane: what it printed and the URL it serves; terminated on leaving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "emulate",
        platform,
        "--listen",
        "127.0.0.1:0",
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        printed = ""
        async with asyncio.timeout(20):
            while "control plane" not in printed:
                line = await proc.stdout.readline()
                assert line, printed
                printed += line.decode()
        yield printed, printed.split("listening on ")[1].split()[0]
    finally:
        proc.terminate()
        await proc.wait()
