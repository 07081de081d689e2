"""The admin API's voice call objects: a start request (`StartCall` and its join models), the
call object answered (`call_view`), and `CallError`, the answer when a call cannot be started or
found."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from storage.repository import VoiceCallRecord

Provider = Literal["zego", "aliyun"]
PROVIDERS: tuple[Provider, ...] = ("zego", "aliyun")
ZEGO_ID = r"^[0-9A-Za-z_-]{1,32}$"  # ZEGO's UserId and AgentUserId rule


class CallError(Exception):
    """A call that cannot be started or found; `status` and `code` are the API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ZegoJoin(_Body):
    """The RTC room the app's user is in, and the ids ZEGO's agent takes there."""

    room_id: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")
    user_id: str = Field(pattern=ZEGO_ID)  # the user's ZEGO (RTC) user id
    user_stream_id: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")
    agent_user_id: str = Field(pattern=ZEGO_ID)  # must differ from every real user's id
    agent_stream_id: str = Field(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.-]+$")


class AliyunRuntime(_Body):
    """For apps that run the RTC channel themselves (StartAIAgentInstance)."""

    channel_id: str = Field(min_length=1, max_length=128)
    agent_user_id: str = Field(min_length=1, max_length=64)
    auth_token: SecretStr  # the agent's token to join that channel; passed on, never stored


class AliyunJoin(_Body):
    # voice only: the agent's RTC runtime is a VoiceChat (vision and avatar calls are not served)
    call_type: Literal["AUDIO_CALL"] = "AUDIO_CALL"
    runtime: AliyunRuntime | None = None


class StartCall(_Body):
    """`POST /api/v1/voice/calls`: who calls, on which channel, through which cloud."""

    provider: Provider
    channel_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=255)  # the user's id on the channel's platform
    zego: ZegoJoin | None = None
    aliyun: AliyunJoin | None = None

    @model_validator(mode="after")
    def _join_matches(self) -> Self:
        if self.provider == "zego" and self.zego is None:
            raise ValueError("a ZEGO call needs the zego object (room and stream ids)")
        if self.provider == "aliyun" and self.zego is not None:
            raise ValueError("an Alibaba call takes no zego object")
        if self.provider == "zego" and self.aliyun is not None:
            raise ValueError("a ZEGO call takes no aliyun object")
        return self


def call_view(call: VoiceCallRecord, now: datetime) -> dict[str, Any]:
    """The API's call object; never the secret, never a join token."""
    view: dict[str, Any] = {
        "id": call.id,
        "provider": call.provider,
        "channel_id": call.channel_id,
        "user_id": call.platform_user_id,
        "conversation_id": call.conversation_id,
        "started_at": call.started_at.isoformat(),
        "expires_at": call.expires_at.isoformat(),
        "status": "active" if call.active(now) else "ended",
    }
    if call.ended_at is not None:
        view["ended_at"] = call.ended_at.isoformat()
        view["end_reason"] = call.end_reason
    view.update(call.details)
    return view
