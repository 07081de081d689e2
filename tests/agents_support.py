"""Fixtures and helpers for tests that need an LLM: a fake OpenAI-compatible server on port 0.

Import `fake_llm_fixture` into a test module (it registers under the name `fake_llm`), then ask
for `fake_llm` as an argument.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.base import Agent, AgentRequest, Role, Turn
from agents.config import OpenAIAgentConfig
from tools.fake_llm import FakeLLM

FAKE_LLM_KEY = "sk-fake-test-key-0123456789"


# Registered as `fake_llm`: tests name their argument that without shadowing the import.
@pytest.fixture(name="fake_llm")
async def fake_llm_fixture() -> AsyncIterator[FakeLLM]:
    """A started fake LLM server requiring FAKE_LLM_KEY; stopped at teardown."""
    server = FakeLLM(api_key=FAKE_LLM_KEY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def openai_config(server: FakeLLM | str, **overrides: Any) -> OpenAIAgentConfig:
    """An OpenAIAgentConfig for `server` (or a base URL), with test-sized timeouts by default."""
    values: dict[str, Any] = {
        "type": "openai",
        "base_url": server if isinstance(server, str) else server.url,
        "api_key": FAKE_LLM_KEY,
        "model": "fake-model",
        "timeout": 10.0,
        "first_token_timeout": 5.0,
        "max_retries": 2,
    }
    values.update(overrides)
    return OpenAIAgentConfig.model_validate(values)


def make_request(
    text: str = "hello there", history: tuple[tuple[Role, str], ...] = (), system: str = ""
) -> AgentRequest:
    """An AgentRequest from plain (role, content) pairs."""
    turns = tuple(Turn(role, content) for role, content in history)
    return AgentRequest(system_prompt=system, history=turns, user_text=text, user_id="u-1")


async def collect(agent: Agent, request: AgentRequest, into: list[str] | None = None) -> list[str]:
    """Every delta of one answer; with `into`, deltas seen before an error stay inspectable."""
    deltas = [] if into is None else into
    async for delta in agent.stream(request):
        deltas.append(delta)
    return deltas


class RecordingSleep:
    """An injectable sleep that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)
