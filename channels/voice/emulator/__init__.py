"""The voice clouds channeld is the LLM of, played locally (`channeld emulate voice --provider
zego|aliyun`): the API an app backend calls to start and stop an AI agent, then the agent
itself, which sends each utterance to the LLM endpoint it was given as that cloud does, reads
the streamed answer strictly, remembers the call's context like the cloud and sends the cloud's
callbacks.

What the rest of channeld uses: `ZegoAgentEmulator` and `AliyunAgentEmulator` (serve one on a
loop: `await start()`, `.url`, `await stop()`; drive it with `say`, `repeat`, `interrupt`,
`hangup`, `set_console`), `VoiceEmulatorThread` (the same on a thread of its own, for tests)
and `add_arguments` / `main` (the command).

Modules by role, on the shared base `channels.emulator`: `server` (`VoiceEmulator`: instances,
rounds, the agent's loop), `zego` and `zego_api` (ZEGO AI Agent's API, request shape and
callbacks), `aliyun`, `aliyun_api` and `acs3` (Alibaba's RPC API, its V3 signature, request
shape and callbacks), `calls` (what a call remembers), `llm` (one request, read strictly),
`callbacks` (the sender and its retries), `control` (`/_emulator/voice/`), `providers`,
`thread` and `cli`.
"""

from channels.voice.emulator.aliyun import AliyunAgentEmulator, Console
from channels.voice.emulator.cli import add_arguments, main
from channels.voice.emulator.providers import DEFAULT_LISTEN, PROVIDERS
from channels.voice.emulator.server import VoiceEmulator
from channels.voice.emulator.thread import VoiceEmulatorThread
from channels.voice.emulator.zego import Agent, ZegoAgentEmulator

__all__ = [
    "DEFAULT_LISTEN",
    "PROVIDERS",
    "Agent",
    "AliyunAgentEmulator",
    "Console",
    "VoiceEmulator",
    "VoiceEmulatorThread",
    "ZegoAgentEmulator",
    "add_arguments",
    "main",
]
