"""Easemob's registry entry: bot users of an Easemob app, reached by callback, and its emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.easemob.config import EasemobChannelConfig
from channels.observer import Observer
from channels.platform import Emulator, Platform, command_at
from channels.provider import ChannelProvider, InboundSink


def _user_message(app_id: str, user: str, group: bool) -> Mapping[str, Any]:
    # the bot answers one-to-one messages only: a group message would never be answered
    return {"bot_user": app_id, "from_user": user}


def _provider(
    config: EasemobChannelConfig, sink: InboundSink, observer: Observer
) -> ChannelProvider:
    # imported when a channel starts: `channeld check-config` loads no SDK
    from channels.easemob.provider import EasemobProvider

    return EasemobProvider(config, sink, observer=observer)


EASEMOB = Platform(
    name="easemob",
    title="Easemob",
    config=EasemobChannelConfig,
    provider=_provider,
    emulator=Emulator(
        help="a local Easemob app (REST API with app tokens, rewrites, signed pre-send and "
        "post-send callbacks)",
        command=command_at("channels.easemob.emulator"),
        url="http://127.0.0.1:8792",
        app_field="bot_user",
        chat_field="chat_id",
        user_message=_user_message,
    ),
    callbacks=True,
)
