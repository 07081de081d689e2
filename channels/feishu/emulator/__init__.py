"""A local Feishu/Lark on one port: long-connection gateway, OpenAPI, CardKit and control plane
(`channeld emulate feishu`).

What the rest of channeld uses: `FeishuEmulator` (serve it on a loop: `await start()`, `await
stop()`), `FeishuEmulatorThread` (the same on a thread of its own, for tests), `serve` (in the
caller's loop until cancelled) and `add_arguments` / `main` (the command).

Modules by role, on the shared base `channels.emulator`: `server` (the `FeishuEmulator` class),
`gateway` (discovery, `/ws/v2`, pbbp2 frames, socket faults), `events` (event pushes and
redelivery), `openapi` (tenant tokens, IM send and reply, bot info), `cardkit` (card entities and
streaming), `contact` (a user's profile, and an app without the permission), `http` (fault
answers and business codes), `control` (Feishu's `/_emulator/` routes), `state` (what it
remembers), `payloads` (wire shapes), `thread` (`FeishuEmulatorThread`) and `cli` (`channeld
emulate feishu`). Frames are built with `channels.feishu.frames`, shared with our client.
"""

from channels.feishu.emulator.cli import DEFAULT_LISTEN, add_arguments, main, serve
from channels.feishu.emulator.server import FeishuEmulator
from channels.feishu.emulator.thread import FeishuEmulatorThread

__all__ = [
    "DEFAULT_LISTEN",
    "FeishuEmulator",
    "FeishuEmulatorThread",
    "add_arguments",
    "main",
    "serve",
]
