"""A local WuKongIM v2.2.5 on one port: HTTP API, message event stream, webhook pusher and
control plane (`channeld emulate wukongim`).

What the rest of channeld uses: `WuKongIMEmulator` (serve it on a loop: `await start()`, `await
stop()`), `WuKongIMEmulatorThread` (the same on a thread of its own, for tests), `serve` (in the
caller's loop until cancelled) and `add_arguments` / `main` (the command).

Modules by role, on the shared base `channels.emulator`: `server` (the `WuKongIMEmulator`
class), `api` (the HTTP routes and the token check), `messaging` (persisting, chats, streamed
answers, history), `streams` (the message event cache and stored event states), `webhook` (the
batching pusher with its retries), `control` (WuKongIM's `/_emulator/` routes), `state` (what it
remembers), `payloads` (wire shapes), `thread` (`WuKongIMEmulatorThread`) and `cli`.
"""

from channels.wukongim.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.wukongim.emulator.server import WuKongIMEmulator
from channels.wukongim.emulator.thread import WuKongIMEmulatorThread

__all__ = [
    "DEFAULT_LISTEN",
    "WuKongIMEmulator",
    "WuKongIMEmulatorThread",
    "add_arguments",
    "main",
    "serve",
]
