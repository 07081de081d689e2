"""`[[channels]]` entries with `type = "easemob"`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from channels.config import SENDS_SECRETS, ChannelConfigBase, NonEmptySecret
from common.endpoint import https_unless_loopback

DEFAULT_API_BASE = "https://a1.easemob.com"
# a REST message's body and ext together hold at most 5 KB (docs/platforms/easemob.md §2.3)
MAX_BODY_BYTES = 5000
# org and app names as the console shows them in the app key `org#app`
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class EasemobChannelConfig(ChannelConfigBase):
    """A bot user of one Easemob app: messages come by callback, answers go through REST."""

    type: Literal["easemob"] = "easemob"
    # the REST host (which receives client_secret and the app token)
    api_base: str = Field(
        default=DEFAULT_API_BASE,
        json_schema_extra={"x-essential": True, SENDS_SECRETS: True},
    )
    org_name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    app_name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: NonEmptySecret
    # the callback rule's secret: `security` of every callback is md5(callId + it + timestamp)
    callback_secret: NonEmptySecret
    # Easemob user names are lower case (the server folds them), at most 64 bytes
    bot_user: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    # "edit": the first message, then rewrites with the growing text (at most 9; the feature
    # must be enabled by Easemob); "off": the whole answer as message(s) at the end
    stream: Literal["edit", "off"] = "off"
    max_message_bytes: int = Field(default=MAX_BODY_BYTES, ge=200, le=MAX_BODY_BYTES)
    request_timeout: float = Field(default=10.0, gt=0, le=120)

    @field_validator("api_base")
    @classmethod
    def _api_base_is_https(cls, value: str) -> str:
        return https_unless_loopback(value)
