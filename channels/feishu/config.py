"""`[[channels]]` entries with `type = "feishu"` (Feishu and Lark custom apps)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from channels.config import SENDS_SECRETS, ChannelConfigBase, NonEmptySecret, http_base_url

DOMAINS = {
    "feishu": "https://open.feishu.cn",
    "lark": "https://open.larksuite.com",
}


class FeishuChannelConfig(ChannelConfigBase):
    """A Feishu/Lark bot receiving events over the long connection."""

    type: Literal["feishu"] = "feishu"
    final_update_gap: ClassVar[float] = 0.1  # CardKit: 10 operations per second per card
    app_id: str = Field(min_length=1)  # cli_...
    app_secret: NonEmptySecret
    # "feishu", "lark", or a base URL (an emulator, a private deployment); the web form shows it
    # among the essential fields although it has a default; discovery and the token call (which
    # carry app_secret) go there
    domain: str = Field(
        default="feishu", json_schema_extra={"x-essential": True, SENDS_SECRETS: True}
    )
    request_timeout: float = Field(default=10.0, gt=0, le=120)
    # silence on the socket (pongs included) before a reconnect; 0: the ping interval plus 30 s
    watchdog_seconds: float = Field(default=0.0, ge=0, le=3600)
    # CardKit allows 10 operations per second per card; two updates a second leave room for many
    # concurrent answers under the app's 50 per second
    card_update_interval: float = Field(default=0.5, ge=0.1, le=10.0)
    card_updates_per_second: float = Field(default=20.0, gt=0, le=50)

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        if value in DOMAINS:
            return value
        if value.lower().startswith(("http://", "https://")):
            return http_base_url(value)
        raise ValueError('domain must be "feishu", "lark" or a URL starting with http(s)://')

    @property
    def base_url(self) -> str:
        """Where discovery and the OpenAPI live."""
        return DOMAINS.get(self.domain, self.domain)
