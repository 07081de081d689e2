"""DingTalk's registry entry: Stream-mode robots, their emulator and the built-in demo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from channels.dingtalk.config import DingTalkChannelConfig
from channels.observer import Observer
from channels.platform import Demo, Emulator, EmulatorProcess, Platform, command_at
from channels.provider import ChannelProvider, InboundSink

DEMO_CHANNEL_ID = "dingtalk-demo"
DEMO_CLIENT_ID = "ding-demo"
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105  (the emulator's own, well-known demo credential)
DEMO_TEMPLATE = "tpl.ai.schema"


def _user_message(app_id: str, user: str, group: bool) -> Mapping[str, Any]:
    body: dict[str, Any] = {
        "client_id": app_id,
        "conversation_type": "2" if group else "1",
        "sender_staff_id": user,
        "sender_nick": user,
        "mentioned": True,
    }
    if group:
        body["conversation_title"] = f"{user}'s group"
    return body


def _demo_emulator(host: str, port: int) -> EmulatorProcess:
    from channels.dingtalk.emulator import EmulatorThread  # only the demo runs it

    return EmulatorThread(
        [(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)],
        host=host,
        port=port,
        templates=[DEMO_TEMPLATE],
        ping_interval=30.0,
    )


def _demo_channel(url: str) -> DingTalkChannelConfig:
    """A channel pointed at the demo emulator, answering with AI cards."""
    return DingTalkChannelConfig(
        id=DEMO_CHANNEL_ID,
        client_id=DEMO_CLIENT_ID,
        client_secret=SecretStr(DEMO_CLIENT_SECRET),
        card_template_id=DEMO_TEMPLATE,
        api_base=url,
        oapi_base=url,  # the emulator serves both hosts' calls on one port
    )


def _provider(
    config: DingTalkChannelConfig, sink: InboundSink, observer: Observer
) -> ChannelProvider:
    # imported when a channel starts: `channeld check-config` loads no SDK
    from channels.dingtalk.provider import DingTalkProvider

    return DingTalkProvider(config, sink, observer=observer)


DINGTALK = Platform(
    name="dingtalk",
    title="DingTalk",
    config=DingTalkChannelConfig,
    provider=_provider,
    emulator=Emulator(
        help="a local DingTalk (Stream gateway + OpenAPI)",
        command=command_at("channels.dingtalk.emulator"),
        url="http://127.0.0.1:8788",
        app_field="client_id",
        chat_field="conversation_id",
        user_message=_user_message,
        demo=Demo(app=DEMO_CLIENT_ID, emulator=_demo_emulator, channel=_demo_channel),
    ),
)
