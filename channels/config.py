"""Settings every channel has, whatever its platform."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from channels.voice.config import VoiceConfig
from common.endpoint import SENDS_SECRETS, http_base_url

# SENDS_SECRETS and http_base_url are re-exported: the platforms' config models import them here
__all__ = ["SENDS_SECRETS", "ChannelConfigBase", "NonEmptySecret", "http_base_url", "sends_secrets"]


def _not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


# A platform credential (shown as ***, never logged); an empty one could never connect.
NonEmptySecret = Annotated[SecretStr, AfterValidator(_not_empty)]


def sends_secrets(model: type[BaseModel]) -> tuple[str, ...]:
    """Names of the settings marked SENDS_SECRETS on a config class."""
    return tuple(
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(SENDS_SECRETS)
    )


class ChannelConfigBase(BaseModel):
    """Common `[[channels]]` keys; each platform adds its own and a `type` literal."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # the least time between a reply's last update and its final call (a platform's per-card
    # rate limit); the answer is complete then, so no more than the platform needs
    final_update_gap: ClassVar[float] = 0.0

    type: str  # each platform narrows this to its literal tag
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    agent: str = "default"
    enabled: bool = True
    group_context: Literal["per_user", "shared"] = "per_user"
    idle_reset_minutes: int = Field(default=720, ge=1)
    queue_limit: int = Field(default=5, ge=1, le=100)  # waiting messages per conversation
    card_update_interval: float = Field(default=0.3, ge=0.05, le=10.0)  # seconds, per reply
    card_updates_per_second: float = Field(default=20.0, gt=0, le=200)  # token bucket, per channel
    # its users may call the assistant through a cloud voice agent (channels/voice/)
    voice: VoiceConfig | None = None

    def unproven_callbacks(self) -> str | None:
        """Why this channel's callbacks would be accepted with no proof of their origin (a
        platform that signs nothing, with no key set); None when they carry one."""
        return None
