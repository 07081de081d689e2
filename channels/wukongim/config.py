"""`[[channels]]` entries with `type = "wukongim"`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator

from channels.config import SENDS_SECRETS, ChannelConfigBase, NonEmptySecret, http_base_url

DEFAULT_API_BASE = "http://127.0.0.1:5001"
# The key travels in the webhook URL, where WuKongIM v2.2.5 appends `?event=...` without looking
# at what is there (docs/platforms/wukongim.md §1.2): characters that need no escaping and that
# no query parser splits on keep it intact.
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def _url_safe(value: SecretStr) -> SecretStr:
    if not _URL_SAFE.fullmatch(value.get_secret_value()):
        raise ValueError(
            "must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ - (it travels in the webhook URL)"
        )
    return value


WebhookKey = Annotated[SecretStr, AfterValidator(_url_safe)]


class WuKongIMChannelConfig(ChannelConfigBase):
    """A bot on a WuKongIM server: messages come by webhook, answers go through its HTTP API."""

    type: Literal["wukongim"] = "wukongim"
    # the HTTP API (which receives the token); the web form shows it among the essential fields
    api_base: str = Field(
        default=DEFAULT_API_BASE,
        json_schema_extra={"x-essential": True, SENDS_SECRETS: True},
    )
    token: NonEmptySecret | None = None  # the server's managerToken, sent as the `token` header
    # the bot's user id; WuKongIM refuses channel ids holding @, # or & (they build its own ids)
    bot_uid: str = Field(min_length=1, max_length=128, pattern=r"^[^\s@#&]+$")
    # "event": v2.2's message event stream types the answer into one message; "off": messages
    stream: Literal["event", "off"] = "event"
    max_message_chars: int = Field(default=4000, ge=200, le=100_000)
    # WuKongIM signs nothing: when set, a callback must carry `?key=<this>`
    webhook_key: WebhookKey | None = None
    request_timeout: float = Field(default=10.0, gt=0, le=120)

    @field_validator("api_base")
    @classmethod
    def _api_base_is_http(cls, value: str) -> str:
        return http_base_url(value)

    def unproven_callbacks(self) -> str | None:
        if self.webhook_key is None:
            return "webhook_key is not set, and WuKongIM signs nothing"
        return None
