"""ZIM's registry entry: robots of a ZEGO ZIM app, reached by signed callbacks, and its emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.observer import Observer
from channels.platform import Emulator, Platform, command_at
from channels.provider import ChannelProvider, InboundSink
from channels.zim.config import ZimChannelConfig


def _user_message(app_id: str, user: str, group: bool) -> Mapping[str, Any]:
    # a robot is only written to one to one: ZIM sends no robot callback for groups
    return {"robot_id": app_id, "from_user_id": user}


def _provider(config: ZimChannelConfig, sink: InboundSink, observer: Observer) -> ChannelProvider:
    # imported when a channel starts: `channeld check-config` loads no SDK
    from channels.zim.provider import ZimProvider

    return ZimProvider(config, sink, observer=observer)


ZIM = Platform(
    name="zim",
    title="ZEGO ZIM",
    config=ZimChannelConfig,
    provider=_provider,
    emulator=Emulator(
        help="a local ZEGO ZIM app (signed server API, robots, signed callbacks with retries)",
        command=command_at("channels.zim.emulator"),
        url="http://127.0.0.1:8791",
        app_field="robot_id",
        chat_field="chat_id",
        user_message=_user_message,
    ),
    callbacks=True,
)
