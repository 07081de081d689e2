"""The clouds the voice emulator plays, by the name `--provider` takes, and where each listens
unless told otherwise."""

from __future__ import annotations

from channels.voice.emulator.aliyun import AliyunAgentEmulator
from channels.voice.emulator.server import VoiceEmulator
from channels.voice.emulator.zego import ZegoAgentEmulator

PROVIDERS: dict[str, type[VoiceEmulator]] = {
    ZegoAgentEmulator.provider: ZegoAgentEmulator,
    AliyunAgentEmulator.provider: AliyunAgentEmulator,
}
DEFAULT_LISTEN = {
    ZegoAgentEmulator.provider: "127.0.0.1:8793",
    AliyunAgentEmulator.provider: "127.0.0.1:8794",
}
