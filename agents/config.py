"""`[agents.NAME]` configuration: one model per agent type, discriminated on `type`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from common.endpoint import SENDS_SECRETS, http_base_url


class OpenAIAgentConfig(BaseModel):
    """An OpenAI-compatible chat completions endpoint (OpenAI, vLLM, Ollama, LiteLLM...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["openai"]
    base_url: str = Field(json_schema_extra={SENDS_SECRETS: True})  # api_key is sent there
    api_key: SecretStr = SecretStr("")  # local servers often need none
    model: str = Field(min_length=1)
    system_prompt: str = "You are a helpful assistant."
    history_messages: int = Field(default=20, ge=0)  # earlier turns sent with each question
    timeout: float = Field(default=120.0, gt=0)  # seconds for one whole answer, retries included
    first_token_timeout: float = Field(default=30.0, gt=0)  # seconds to the first token, per try
    max_retries: int = Field(default=3, ge=0, le=10)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    # Some older OpenAI-compatible servers reject `stream_options`; turning this off stops
    # asking for the token usage chunk.
    stream_usage: bool = True
    fallback: str | None = None  # agent answering when this one fails before any text
    circuit_failures: int = Field(default=5, ge=1)  # consecutive failures opening the breaker
    circuit_cooldown: float = Field(default=30.0, gt=0)  # seconds open before one trial call

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_base_url(value)


class EchoAgentConfig(BaseModel):
    """Answers with the user's own words: the daemon runs end to end without any LLM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["echo"]
    system_prompt: str = ""
    history_messages: int = Field(default=20, ge=0)
    fallback: str | None = None
    circuit_failures: int = Field(default=5, ge=1)
    circuit_cooldown: float = Field(default=30.0, gt=0)
    delay: float = Field(default=0.02, ge=0, le=5)  # seconds between words, so cards visibly stream


AgentConfig = Annotated[OpenAIAgentConfig | EchoAgentConfig, Field(discriminator="type")]
