"""Feishu / Lark's registry entry: long-connection apps and their emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.feishu.config import FeishuChannelConfig
from channels.observer import Observer
from channels.platform import Emulator, Platform, command_at
from channels.provider import ChannelProvider, InboundSink


def _user_message(app_id: str, user: str, group: bool) -> Mapping[str, Any]:
    body: dict[str, Any] = {
        "app_id": app_id,
        "chat_type": "group" if group else "p2p",
        "sender_open_id": "ou_" + user,
        "sender_name": user,
        "mention_bot": True,
    }
    if group:
        body["chat_name"] = f"{user}'s group"
    return body


def _provider(
    config: FeishuChannelConfig, sink: InboundSink, observer: Observer
) -> ChannelProvider:
    # imported when a channel starts: `channeld check-config` loads no SDK
    from channels.feishu.provider import FeishuProvider

    return FeishuProvider(config, sink, observer=observer)


FEISHU = Platform(
    name="feishu",
    title="Feishu/Lark",
    config=FeishuChannelConfig,
    provider=_provider,
    emulator=Emulator(
        help="a local Feishu/Lark (long-connection gateway + OpenAPI + CardKit)",
        command=command_at("channels.feishu.emulator"),
        url="http://127.0.0.1:8790",
        app_field="app_id",
        chat_field="chat_id",
        user_message=_user_message,
    ),
)
