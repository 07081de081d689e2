"""WuKongIM's registry entry: bots on a WuKongIM server, reached by webhook, and its emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.observer import Observer
from channels.platform import Emulator, Platform, command_at
from channels.provider import ChannelProvider, InboundSink
from channels.wukongim.config import WuKongIMChannelConfig


def _user_message(app_id: str, user: str, group: bool) -> Mapping[str, Any]:
    return {"bot_uid": app_id, "from_uid": user, "group": group, "mention": True}


def _provider(
    config: WuKongIMChannelConfig, sink: InboundSink, observer: Observer
) -> ChannelProvider:
    # imported when a channel starts: `channeld check-config` loads no SDK
    from channels.wukongim.provider import WuKongIMProvider

    return WuKongIMProvider(config, sink, observer=observer)


WUKONGIM = Platform(
    name="wukongim",
    title="WuKongIM",
    config=WuKongIMChannelConfig,
    provider=_provider,
    emulator=Emulator(
        help="a local WuKongIM (HTTP API, message event stream, webhook pusher)",
        command=command_at("channels.wukongim.emulator"),
        url="http://127.0.0.1:5001",
        app_field="bot_uid",
        chat_field="chat_id",
        user_message=_user_message,
    ),
    callbacks=True,
)
