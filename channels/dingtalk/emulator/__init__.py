"""A local DingTalk on one port: Stream gateway, OpenAPI and control plane (`channeld emulate`).

What the rest of channeld uses: `DingTalkEmulator` (serve it on a loop: `await start()`, `await
stop()`), `EmulatorThread` (the same on a thread of its own, for tests and the demo of `channeld
run`), `serve` (in the caller's loop until cancelled) and `add_arguments` / `main` (the command).

Modules by role, on the shared base `channels.emulator`: `server` (the `DingTalkEmulator` class),
`gateway` (tickets, WebSocket, pings, socket faults), `openapi` (tokens, cards, robot and
sessionWebhook routes), `control` (DingTalk's `/_emulator/` routes), `state` (what it remembers),
`payloads` (wire shapes), `thread` (`EmulatorThread`) and `cli` (`channeld emulate dingtalk`).
"""

from channels.dingtalk.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.dingtalk.emulator.server import DingTalkEmulator
from channels.dingtalk.emulator.thread import EmulatorThread

__all__ = [
    "DEFAULT_LISTEN",
    "DingTalkEmulator",
    "EmulatorThread",
    "add_arguments",
    "main",
    "serve",
]
