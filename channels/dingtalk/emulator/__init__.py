"""A local DingTalk on one port: Stream gateway, OpenAPI and control plane (`channeld emulate`).

Modules by role: `server` (the `DingTalkEmulator` class and its HTTP plumbing), `gateway`
(tickets, WebSocket, pings, socket faults), `openapi` (tokens, cards, robot and sessionWebhook
routes), `control` (`/_emulator/` routes), `state` (what it remembers), `payloads` (wire shapes),
`thread` (running it on a private loop for tests) and `cli` (`channeld emulate dingtalk`).
"""

from channels.dingtalk.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.dingtalk.emulator.gateway import ConnectionInfo, SentFrame
from channels.dingtalk.emulator.payloads import BOT_MESSAGE_TOPIC, UserMessage
from channels.dingtalk.emulator.server import DEFAULT_APPS, DEFAULT_TEMPLATE, DingTalkEmulator
from channels.dingtalk.emulator.state import (
    QPS_LIMIT_BODY,
    AckRecord,
    CallRecord,
    CardState,
    EmulatorApp,
    Fault,
)
from channels.dingtalk.emulator.thread import EmulatorThread, run_in_thread

__all__ = [
    "BOT_MESSAGE_TOPIC",
    "DEFAULT_APPS",
    "DEFAULT_LISTEN",
    "DEFAULT_TEMPLATE",
    "QPS_LIMIT_BODY",
    "AckRecord",
    "CallRecord",
    "CardState",
    "ConnectionInfo",
    "DingTalkEmulator",
    "EmulatorApp",
    "EmulatorThread",
    "Fault",
    "SentFrame",
    "UserMessage",
    "add_arguments",
    "main",
    "run_in_thread",
    "serve",
]
