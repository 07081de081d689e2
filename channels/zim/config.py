"""`[[channels]]` entries with `type = "zim"`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from channels.config import SENDS_SECRETS, ChannelConfigBase, NonEmptySecret
from common.endpoint import https_unless_loopback

DEFAULT_API_BASE = "https://zim-api.zego.im"
ROBOT_PREFIX = "@RBT#"  # RobotRegister refuses robot ids without it
MAX_USER_ID_BYTES = 32
# the characters ZIM allows in a user id (robots are users), besides letters and digits
_USER_ID_PUNCTUATION = frozenset("!#$%&()+-:;<=.>?@[]^_ {}|~")


class ZimChannelConfig(ChannelConfigBase):
    """A ZIM robot: messages come as signed callbacks, answers go through the server API."""

    type: Literal["zim"] = "zim"
    app_id: int = Field(ge=1, le=2**32 - 1)  # the project's AppID (a uint32)
    server_secret: NonEmptySecret  # signs every API call and checks every callback
    # the server API (regional hosts: zim-api-sha|hkg|fra|lax|bom|sgp.zego.im); every call
    # carries a signature made with server_secret
    api_base: str = Field(
        default=DEFAULT_API_BASE,
        json_schema_extra={"x-essential": True, SENDS_SECRETS: True},
    )
    robot_id: str = Field(min_length=len(ROBOT_PREFIX) + 1)
    robot_name: str = Field(default="Assistant", min_length=1, max_length=256)
    robot_avatar: str = Field(default="", max_length=500)  # a URL, or none
    # "edit": the first part as a message, then edits with the growing text; "off": messages
    stream: Literal["edit", "off"] = "edit"
    # a text message holds 2 KB of UTF-8 by default; ZEGO support can raise it to 32 KB
    max_message_bytes: int = Field(default=2000, ge=200, le=32_000)
    # every API call of the app (sends, edits, registration) shares ZIM's 20 per second,
    # counted in a sliding second: stay below it with a margin
    api_requests_per_second: float = Field(default=15.0, gt=0, le=20)
    request_timeout: float = Field(default=10.0, gt=0, le=120)

    @field_validator("api_base")
    @classmethod
    def _api_base_is_https(cls, value: str) -> str:
        return https_unless_loopback(value)

    @field_validator("robot_id")
    @classmethod
    def _robot_id(cls, value: str) -> str:
        if not value.startswith(ROBOT_PREFIX):
            raise ValueError(f"must start with {ROBOT_PREFIX}")
        if len(value.encode()) > MAX_USER_ID_BYTES:
            raise ValueError(f"must be at most {MAX_USER_ID_BYTES} bytes")
        if any(not (c.isascii() and c.isalnum()) and c not in _USER_ID_PUNCTUATION for c in value):
            raise ValueError(
                "may hold only letters, digits and !#$%&()+-:;<=.>?@[]^_ {}|~ (a ZIM user id)"
            )
        return value
