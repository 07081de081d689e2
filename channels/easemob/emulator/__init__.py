"""A local Easemob app on one port: REST API, pre-send and post-send callback sender, and control
plane (`channeld emulate easemob`).

What the rest of channeld uses: `EasemobEmulator` (serve it on a loop: `await start()`, `await
stop()`), `EasemobEmulatorThread` (the same on a thread of its own, for tests), `serve` (in the
caller's loop until cancelled) and `add_arguments` / `main` (the command).

Modules by role, on the shared base `channels.emulator`: `server` (the `EasemobEmulator` class),
`api` (the REST routes, app tokens, limits), `messaging` (stored messages, chats, rewrites,
echoes), `callbacks` (the signed pre-send and post-send callbacks), `control` (Easemob's
`/_emulator/` routes), `state` (what it remembers, error shapes), `thread` and `cli`.
"""

from channels.easemob.emulator.callbacks import security
from channels.easemob.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.easemob.emulator.server import EasemobEmulator
from channels.easemob.emulator.thread import EasemobEmulatorThread

__all__ = [
    "DEFAULT_LISTEN",
    "EasemobEmulator",
    "EasemobEmulatorThread",
    "add_arguments",
    "main",
    "security",
    "serve",
]
