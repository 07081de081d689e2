"""What a platform declares to channeld: config model, provider factory, emulator, admin form.

Each `channels/<platform>/platform.py` builds one `Platform`; `channels/registry.py` lists them.
Heavy parts (the provider with its SDK, the emulator) are reached through functions that import
them on first use, so `channeld check-config` loads neither: a platform's `provider` imports its
provider class inside the function, its emulator is named by module (`command_at`).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from channels.config import ChannelConfigBase
from channels.observer import Observer
from channels.provider import ChannelProvider, InboundSink

C = TypeVar("C", bound=ChannelConfigBase)


def command_at(module: str) -> Callable[[], EmulatorCommand]:
    """The emulator package `module`, imported only when `channeld emulate` picks it."""
    return lambda: cast(EmulatorCommand, importlib.import_module(module))


class EmulatorCommand(Protocol):
    """`channeld emulate PLATFORM`: an emulator package's module satisfies this.

    `add_arguments` defines `--listen HOST:PORT` among its options; the CLI refuses a
    non-loopback address before `main` runs (an emulator has no authentication).
    """

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    async def main(self, args: argparse.Namespace) -> int: ...


class EmulatorProcess(Protocol):
    """An emulator served on a thread of its own; `start` and `stop` block."""

    @property
    def url(self) -> str: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Demo:
    """What `channeld run` with no tenant serves: an emulator in a thread and a channel on it."""

    app: str  # the demo app's id (what `channeld chat --app` takes)
    emulator: Callable[[str, int], EmulatorProcess]  # (host, port) -> not yet started
    channel: Callable[[str], ChannelConfigBase]  # the emulator's URL -> the demo channel


@dataclass(frozen=True, slots=True)
class Emulator:
    """A platform's local emulator, as `channeld emulate`, `channeld chat` and `run` use it."""

    help: str  # one line in `channeld emulate --help`
    # imported on first use: emulator code loads only for `channeld emulate PLATFORM`
    command: Callable[[], EmulatorCommand]
    url: str  # where `channeld emulate PLATFORM` listens by default (`channeld chat`'s default)
    # the control plane's field naming an app in /_emulator/state and /messages (the config
    # field too: client_id, app_id), and the field holding a message's chat id
    app_field: str
    chat_field: str
    # the /_emulator/messages body for `user` typing to the bot (app id, user, in a group)
    user_message: Callable[[str, str, bool], Mapping[str, Any]]
    demo: Demo | None = None  # set on the platform `channeld run` emulates with no config


@dataclass(frozen=True, slots=True)
class Platform(Generic[C]):
    """One IM platform: everything outside its folder reaches it through this entry."""

    name: str  # the `type` of its `[[channels]]` entries
    title: str  # how help texts and log lines name it
    config: type[C]  # `[[channels]]` entries; the admin page's form is its JSON schema
    # builds a channel's provider, importing it (and its SDK) on first call
    provider: Callable[[C, InboundSink, Observer], ChannelProvider]
    emulator: Emulator | None = None
    # its messages arrive as HTTP callbacks (`channels/callbacks.py`): the daemon then serves the
    # callback listener, and shows operators the URL to give the platform
    callbacks: bool = False

    def form_schema(self, ref_template: str) -> dict[str, Any]:
        """The JSON schema of its settings: the admin API documents it, the web page's form."""
        return self.config.model_json_schema(ref_template=ref_template)
