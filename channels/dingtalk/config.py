"""`[[channels]]` entries with `type = "dingtalk"`."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from channels.config import SENDS_SECRETS, ChannelConfigBase, NonEmptySecret, http_base_url
from common.endpoint import https_unless_loopback

DEFAULT_API_BASE = "https://api.dingtalk.com"
DEFAULT_OAPI_BASE = "https://oapi.dingtalk.com"  # the older OpenAPI host: contacts (topapi)


def default_api_base() -> str:
    """The SDK's own override variable is honoured, so one setting moves every call."""
    return os.environ.get("DINGTALK_OPENAPI_ENDPOINT", DEFAULT_API_BASE)


class DingTalkChannelConfig(ChannelConfigBase):
    """A Stream-mode DingTalk robot (enterprise internal app)."""

    type: Literal["dingtalk"] = "dingtalk"
    client_id: str = Field(min_length=1)  # AppKey; also the robotCode of an internal app
    client_secret: NonEmptySecret
    robot_code: str = ""  # defaults to client_id
    card_template_id: str = ""  # empty: answers go out as markdown messages
    card_content_key: str = "content"  # the template's streaming markdown variable
    # where the token and gateway calls (which carry client_secret) go; validate_default: the
    # SDK variable behind the default is checked like a configured value
    api_base: str = Field(
        default_factory=default_api_base,
        validate_default=True,
        json_schema_extra={SENDS_SECRETS: True},
    )
    # where the contact calls go (the sender's profile when `[users] enrich` is on); they carry
    # the access token in the query string, so https unless an emulator on a loopback host
    oapi_base: str = Field(default=DEFAULT_OAPI_BASE, json_schema_extra={SENDS_SECRETS: True})
    request_timeout: float = Field(default=10.0, gt=0, le=120)
    watchdog_seconds: float = Field(default=120.0, ge=1, le=3600)  # silence before a reconnect

    @field_validator("api_base")
    @classmethod
    def _api_base_is_http(cls, value: str) -> str:
        return http_base_url(value)

    @field_validator("oapi_base")
    @classmethod
    def _oapi_base_is_https(cls, value: str) -> str:
        return https_unless_loopback(value)

    @property
    def effective_robot_code(self) -> str:
        return self.robot_code or self.client_id
