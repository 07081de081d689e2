"""`[channels.voice]`: a channel whose users may call the assistant through a cloud voice agent.

Any channel may have it: the call joins the conversation the user's text chat on that channel
uses. Each cloud is its own table (`[channels.voice.zego]`, `[channels.voice.aliyun]`); a channel
may offer both. docs/platforms/voice.md has the facts behind each setting.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from common.endpoint import SENDS_SECRETS, http_base_url, https_unless_loopback

DEFAULT_ZEGO_API_BASE = "https://aigc-aiagent-api.zegotech.cn"
DEFAULT_ALIYUN_REGION = "cn-shanghai"
_SECRET = Annotated[SecretStr, Field(min_length=1)]
MAX_PROVIDER_OBJECT = 16_384  # characters of a TTS or ASR object as JSON


def _provider_object(value: Any) -> Any:
    """ZEGO's TTS or ASR object, which may carry a vendor's token: kept as a secret holding the
    object's JSON. The config file gives a table; the admin API a table or its JSON text."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("must be a JSON object (ZEGO's TTS or ASR object)") from None
    if not isinstance(value, dict):
        raise ValueError("must be an object (ZEGO's TTS or ASR object)")
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_PROVIDER_OBJECT:
        raise ValueError(f"must be at most {MAX_PROVIDER_OBJECT} characters as JSON")
    return SecretStr(text)


# write-only like every secret: shown as ***, replaced whole
_PROVIDER_OBJECT = Annotated[SecretStr, BeforeValidator(_provider_object)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ZegoVoice(_Section):
    """ZEGO AI Agent: channeld registers the agent and creates one instance per call."""

    app_id: int = Field(ge=1, le=2**32 - 1)  # the project's AppID
    server_secret: _SECRET  # signs every API call (md5, like ZIM's server API)
    # checks the AI Agent callbacks (sha1); the console's callback secret, if it differs
    callback_secret: _SECRET | None = None
    agent_id: str = Field(default="channeld-voice", min_length=1, max_length=128)
    # regional hosts: aigc-aiagent-api-sha|hkg|fra|lax|bom|sgp.zegotech.cn
    api_base: str = Field(default=DEFAULT_ZEGO_API_BASE, json_schema_extra={SENDS_SECRETS: True})
    # ZEGO's TTS and ASR objects, passed through; they may carry a vendor's token, so they are
    # secrets (write-only, replaced whole)
    tts: _PROVIDER_OBJECT | None = None
    asr: _PROVIDER_OBJECT | None = None
    # how many of its own messages ZEGO sends back per request; channeld answers from its own
    # history, so only the last one (the utterance) matters
    window_size: int = Field(default=4, ge=1, le=100)

    @field_validator("api_base")
    @classmethod
    def _https(cls, value: str) -> str:
        return https_unless_loopback(value)

    def tts_object(self) -> dict[str, Any] | None:
        """The TTS object as ZEGO takes it."""
        return None if self.tts is None else _loaded(self.tts)

    def asr_object(self) -> dict[str, Any] | None:
        """The ASR object as ZEGO takes it."""
        return None if self.asr is None else _loaded(self.asr)

    def callback_key(self) -> str:
        """The secret that signs ZEGO's callbacks."""
        secret = self.callback_secret or self.server_secret
        return secret.get_secret_value()


def _loaded(secret: SecretStr) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(secret.get_secret_value())
    return loaded


class AliyunVoice(_Section):
    """Alibaba Cloud IMS AI agent whose LLM node is "self-developed, OpenAI spec"."""

    access_key_id: str = Field(min_length=1, max_length=128)
    access_key_secret: _SECRET
    region: str = Field(default=DEFAULT_ALIYUN_REGION, pattern=r"^[a-z0-9-]{2,32}$")
    agent_id: str = Field(min_length=1, max_length=128)  # the console's AI agent
    llm_api_key: _SECRET  # the API key entered for that agent's LLM node
    callback_token: _SECRET  # the agent callback token (sent verbatim in Authorization)
    # a host (https), or an http:// URL of a loopback host (an emulator); default: the region's
    endpoint: str | None = Field(default=None, json_schema_extra={SENDS_SECRETS: True})

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or "://" in value:
            return None if value is None else https_unless_loopback(value)
        # a bare host: https is implied
        return urlsplit(http_base_url(f"https://{value}")).netloc


class VoiceConfig(_Section):
    """How the clouds reach channeld, how long a call may last, and the clouds offered."""

    # the callback listener as the clouds reach it: the LLM endpoint is
    # {public_base_url}/voice/{channel}/chat/completions, the callback URL
    # {public_base_url}/hooks/{channel}/voice. ZEGO sends each call's secret and the caller's
    # words there: changing it asks for the clouds' secrets again
    public_base_url: str = Field(json_schema_extra={SENDS_SECRETS: True})
    max_call_seconds: int = Field(default=1800, ge=30, le=86_400)
    zego: ZegoVoice | None = None
    aliyun: AliyunVoice | None = None

    @field_validator("public_base_url")
    @classmethod
    def _public(cls, value: str) -> str:
        # the clouds send each call's secret to this URL: https, unless a local emulator calls
        return https_unless_loopback(value)

    @model_validator(mode="after")
    def _one_cloud(self) -> Self:
        if self.zego is None and self.aliyun is None:
            raise ValueError(
                "[channels.voice] needs [channels.voice.zego] or [channels.voice.aliyun] (or both)"
            )
        return self

    def endpoint_url(self, channel_id: str) -> str:
        """The full LLM endpoint (ZEGO's `LLM.Url`)."""
        return f"{self.public_base_url}/voice/{channel_id}/chat/completions"

    def endpoint_base(self, channel_id: str) -> str:
        """The base URL for Alibaba's console (its workflow appends /chat/completions)."""
        return f"{self.public_base_url}/voice/{channel_id}"

    def callback_url(self, channel_id: str) -> str:
        """Where the clouds' console should send the agent callbacks."""
        return f"{self.public_base_url}/hooks/{channel_id}/voice"
