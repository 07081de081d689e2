"""The platforms channeld knows, one line each; `daemon/` asks here and names none.

The config union, `check-config`, the admin API's channel validation, its OpenAPI document, the
web page's form, `channeld emulate`, `channeld chat` and the demo of `channeld run` all derive
from this list. Tests add a platform with `register` and take it away with `unregister`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from channels.config import ChannelConfigBase
from channels.dingtalk.platform import DINGTALK
from channels.easemob.platform import EASEMOB
from channels.feishu.platform import FEISHU
from channels.observer import Observer
from channels.platform import Demo, Emulator, EmulatorCommand, Platform, command_at
from channels.provider import ChannelProvider, InboundSink
from channels.wukongim.platform import WUKONGIM
from channels.zim.platform import ZIM
from common.errors import ConfigError

# A new platform is its folder plus one line here. The first platform with a demo is the one
# `channeld run` emulates with no config, and the default of `channeld channels add --type`.
_platforms: dict[str, Platform[Any]] = {
    DINGTALK.name: DINGTALK,
    FEISHU.name: FEISHU,
    WUKONGIM.name: WUKONGIM,
    ZIM.name: ZIM,
    EASEMOB.name: EASEMOB,
}


@dataclass(frozen=True, slots=True)
class ExtraEmulator:
    """An emulator of something that is not a platform (a voice cloud): `channeld emulate NAME`."""

    name: str
    help: str  # one line in `channeld emulate --help`
    command: Callable[[], EmulatorCommand]  # imported only when `channeld emulate NAME` runs
    url: str  # where it listens by default


# Emulators beside the platforms' own, one line each.
_extra_emulators: tuple[ExtraEmulator, ...] = (
    ExtraEmulator(
        "voice",
        "a voice cloud calling channeld as its LLM (--provider zego or aliyun)",
        command_at("channels.voice.emulator"),
        "http://127.0.0.1:8793",
    ),
)


def extra_emulators() -> tuple[ExtraEmulator, ...]:
    """The emulators that belong to no platform, for `channeld emulate` and `channeld chat`."""
    return _extra_emulators


def register(platform: Platform[Any]) -> None:
    """Adds a platform; ValueError when its name is taken."""
    if platform.name in _platforms:
        raise ValueError(f"platform {platform.name!r} is already registered")
    _platforms[platform.name] = platform


def unregister(name: str) -> None:
    """Removes a platform registered with `register` (KeyError when there is none)."""
    del _platforms[name]


def platforms() -> tuple[Platform[Any], ...]:
    """Every registered platform, in registration order."""
    return tuple(_platforms.values())


def names() -> tuple[str, ...]:
    """The `type` tags of every registered platform."""
    return tuple(_platforms)


def get(name: str) -> Platform[Any]:
    """The platform whose channels have `type = name`; ConfigError naming the known ones."""
    try:
        return _platforms[name]
    except KeyError:
        raise ConfigError(
            f"channel type {name!r} is not supported (known: {', '.join(_platforms)})"
        ) from None


def demo() -> tuple[Platform[Any], Demo]:
    """The platform `channeld run` emulates when no tenant is configured, and its demo."""
    for platform in _platforms.values():
        if platform.emulator is not None and platform.emulator.demo is not None:
            return platform, platform.emulator.demo
    raise LookupError("no registered platform offers a demo")


def default_emulator() -> Emulator:
    """The demo platform's emulator: what `channeld chat` talks to unless told otherwise."""
    for platform in _platforms.values():
        if platform.emulator is not None and platform.emulator.demo is not None:
            return platform.emulator
    raise LookupError("no registered platform offers a demo")


def build_provider(
    config: ChannelConfigBase, sink: InboundSink, observer: Observer
) -> ChannelProvider:
    """The provider of a channel's platform; ConfigError for a type nobody registered."""
    platform = get(config.type)
    if not isinstance(config, platform.config):
        raise ConfigError(
            f"channel {config.id!r}: settings of type {type(config).__name__}, "
            f"not {platform.config.__name__}"
        )
    return platform.provider(config, sink, observer)


def channel_config() -> TypeAdapter[ChannelConfigBase]:
    """Validates one `[[channels]]` entry into its platform's model, chosen by `type`."""
    return _adapter(platforms())


@lru_cache(maxsize=8)
def _adapter(registered: tuple[Platform[Any], ...]) -> TypeAdapter[ChannelConfigBase]:
    # Built at use, keyed on the registry's contents: pydantic fixes a union when it is built,
    # and a platform registered later (a test's) must be part of it.
    models = tuple(platform.config for platform in registered)
    entry: Any = models[0]  # one platform alone is matched by its `type` literal
    if len(models) > 1:
        # `X | Y` cannot spread a tuple built at run time; Union[...] can
        union: Any = Union[models]  # noqa: UP007
        entry = Annotated[union, Field(discriminator="type")]
    adapter: TypeAdapter[ChannelConfigBase] = TypeAdapter(entry)
    return adapter
