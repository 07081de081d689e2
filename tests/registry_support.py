"""A platform that exists only in tests, registered through `channels.registry` like a real one."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from pydantic import Field

from channels import registry
from channels.config import SENDS_SECRETS, ChannelConfigBase, NonEmptySecret
from channels.observer import Observer
from channels.platform import Emulator, EmulatorCommand, Platform
from channels.provider import ChannelProvider, InboundSink
from common.errors import ConfigError

DUMMY = "dummy"
DUMMY_EMULATOR_URL = "http://127.0.0.1:1"  # nothing listens there: `chat` finds it unreachable
DUMMY_EMULATOR_HELP = "a local Dummy, for the registry's tests"


class DummyChannelConfig(ChannelConfigBase):
    """A dummy chat service: a room and the token to enter it."""

    type: Literal["dummy"] = "dummy"
    room: str = Field(min_length=1)
    token: NonEmptySecret
    server: str = Field(default="http://127.0.0.1:1", json_schema_extra={SENDS_SECRETS: True})


class DummyEmulator:
    """`channeld emulate dummy`: prints what it would serve and exits."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--listen", default="127.0.0.1:0", help="where to listen")
        parser.add_argument("--rooms", type=int, default=1, help="rooms to offer")

    async def main(self, args: argparse.Namespace) -> int:
        print(f"dummy emulator: {args.rooms} room(s) on {args.listen}")
        return 0


@dataclass
class Dummy:
    """The registered dummy platform and what the daemon asked of it."""

    built: list[DummyChannelConfig] = field(default_factory=list)  # configs the factory got
    emulator_loads: int = 0  # times `channeld emulate dummy` imported its emulator

    def provider(
        self, config: DummyChannelConfig, sink: InboundSink, observer: Observer
    ) -> ChannelProvider:
        self.built.append(config)
        # what a provider's factory raises for settings it cannot use: the channel fails
        raise ConfigError(f"dummy room {config.room!r} has no server")

    def command(self) -> EmulatorCommand:
        self.emulator_loads += 1
        return DummyEmulator()

    @staticmethod
    def user_message(app_id: str, user: str, group: bool) -> Mapping[str, Any]:
        return {"room": app_id, "sender": user, "group": group}

    @property
    def platform(self) -> Platform[DummyChannelConfig]:
        return Platform(
            name=DUMMY,
            title="Dummy",
            config=DummyChannelConfig,
            provider=self.provider,
            emulator=Emulator(
                help=DUMMY_EMULATOR_HELP,
                command=self.command,
                url=DUMMY_EMULATOR_URL,
                app_field="room",
                chat_field="room",
                user_message=self.user_message,
            ),
        )


@pytest.fixture
def dummy() -> Iterator[Dummy]:
    """The dummy platform, registered for one test and taken away after it."""
    recorder = Dummy()
    registry.register(recorder.platform)
    try:
        yield recorder
    finally:
        registry.unregister(DUMMY)


def dummy_channel(channel_id: str = "dm-1", **settings: Any) -> dict[str, Any]:
    """A `[[channels]]` entry of the dummy platform."""
    return {"id": channel_id, "type": DUMMY, "room": "lobby", "token": "dummy-token", **settings}
