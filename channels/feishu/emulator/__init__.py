"""A local Feishu/Lark on one port: long-connection gateway, OpenAPI, CardKit and control plane
(`channeld emulate feishu`).

Modules by role: `server` (the `FeishuEmulator` class and its HTTP plumbing), `gateway`
(discovery, `/ws/v2`, pbbp2 frames, socket faults), `events` (event pushes and redelivery),
`openapi` (tenant tokens, IM send and reply, bot info), `cardkit` (card entities and streaming),
`http` (injected faults, latency and the call record), `control` (`/_emulator/` routes),
`state` (what it remembers), `payloads` (wire shapes), `thread` (running it on a private loop
for tests) and `cli` (`channeld emulate feishu`). Frames are built with `channels.feishu.frames`,
shared with our client.
"""

from channels.feishu.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.feishu.emulator.events import Delivery
from channels.feishu.emulator.gateway import ConnectionInfo
from channels.feishu.emulator.payloads import Mention, UserMessage
from channels.feishu.emulator.server import (
    DEFAULT_APP_ID,
    DEFAULT_APP_SECRET,
    DEFAULT_APPS,
    FeishuEmulator,
)
from channels.feishu.emulator.state import AckRecord, CallRecord, CardState, Fault, FeishuApp
from channels.feishu.emulator.thread import FeishuEmulatorThread

__all__ = [
    "DEFAULT_APPS",
    "DEFAULT_APP_ID",
    "DEFAULT_APP_SECRET",
    "DEFAULT_LISTEN",
    "AckRecord",
    "CallRecord",
    "CardState",
    "ConnectionInfo",
    "Delivery",
    "Fault",
    "FeishuApp",
    "FeishuEmulator",
    "FeishuEmulatorThread",
    "Mention",
    "UserMessage",
    "add_arguments",
    "main",
    "serve",
]
