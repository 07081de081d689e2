"""A local ZEGO ZIM app on one port: signed server API, signed callbacks with ZIM's retries, and
the control plane (`channeld emulate zim`).

What the rest of channeld uses: `ZimEmulator` (serve it on a loop: `await start()`, `await
stop()`), `ZimEmulatorThread` (the same on a thread of its own, for tests), `serve` (in the
caller's loop until cancelled) and `add_arguments` / `main` (the command).

Modules by role, on the shared base `channels.emulator`: `server` (the `ZimEmulator` class),
`api` (the signed `POST /?Action=` routes: RobotRegister, SendPeerMessage, EditC2cMsgBody,
QueryPeerMsg, the app-wide rate window), `callbacks` (the signed sender and its retries),
`signing` (both signatures), `control` (ZIM's `/_emulator/` routes), `state` (what it
remembers, error codes), `thread` (`ZimEmulatorThread`) and `cli`.
"""

from channels.zim.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.zim.emulator.server import ZimEmulator
from channels.zim.emulator.thread import ZimEmulatorThread

__all__ = [
    "DEFAULT_LISTEN",
    "ZimEmulator",
    "ZimEmulatorThread",
    "add_arguments",
    "main",
    "serve",
]
