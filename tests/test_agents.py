"""Agents against a real openai client and the fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import TypeAdapter, ValidationError

from agents.base import Role
from agents.circuit import CircuitAgent
from agents.config import AgentConfig, EchoAgentConfig, OpenAIAgentConfig
from agents.echo import EchoAgent
from agents.fallback import FallbackAgent
from agents.openai_agent import RETRY_BACKOFF, WAIT_HEADERS, OpenAIAgent
from agents.registry import build_agents, close_agents, fallback_order
from common.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.retry_after import retry_after
from tests.agents_support import (
    FAKE_LLM_KEY,
    RecordingSleep,
    collect,
    fake_llm_fixture,  # noqa: F401 -- a fixture, used by name
    make_request,
    openai_config,
)
from tools.fake_llm import Behaviour, FakeLLM

REPO_ROOT = Path(__file__).resolve().parents[1]


class FixedRng:
    """Jitter pinned to one point of its range, so expected waits are exact."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


NO_JITTER = FixedRng(0.0)


@contextlib.asynccontextmanager
async def openai_agent(
    fake: FakeLLM, sleep: RecordingSleep | None = None, **overrides: object
) -> AsyncIterator[OpenAIAgent]:
    agent = OpenAIAgent(
        "main", openai_config(fake, **overrides), sleep=sleep or RecordingSleep(), rng=NO_JITTER
    )
    try:
        yield agent
    finally:
        await agent.aclose()


# -- streaming ------------------------------------------------------------------------------


async def test_streams_every_delta_in_order(fake_llm: FakeLLM) -> None:
    usage: list[tuple[int, int]] = []
    agent = OpenAIAgent("main", openai_config(fake_llm), on_usage=lambda p, c: usage.append((p, c)))
    try:
        deltas = await collect(agent, make_request("the quick brown fox"))
    finally:
        await agent.aclose()
    assert deltas == ["Echo:", " the", " quick", " brown", " fox"]
    assert "".join(deltas) == "Echo: the quick brown fox"
    assert usage == [(9, 5)]  # system prompt 5 words + question 4 words; 5 tokens answered


async def test_history_and_system_prompt_reach_the_server(fake_llm: FakeLLM) -> None:
    history: tuple[tuple[Role, str], ...] = (
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
    )
    async with openai_agent(fake_llm, history_messages=2, temperature=0.3) as agent:
        await collect(agent, make_request("q3", history, system="Be brief."))
    (recorded,) = fake_llm.requests
    assert recorded.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"},
    ]
    assert recorded.body["model"] == "fake-model"
    assert recorded.body["stream"] is True
    assert recorded.body["stream_options"] == {"include_usage": True}
    assert recorded.body["temperature"] == 0.3
    assert recorded.body["user"] == "u-1"
    assert "max_tokens" not in recorded.body
    assert recorded.headers["Authorization"] == "***"  # present, and masked in the record


async def test_config_system_prompt_is_the_default(fake_llm: FakeLLM) -> None:
    async with openai_agent(fake_llm, history_messages=0, stream_usage=False) as agent:
        await collect(agent, make_request("hi", (("user", "old"),)))
    (recorded,) = fake_llm.requests
    assert [m["content"] for m in recorded.messages] == ["You are a helpful assistant.", "hi"]
    assert "stream_options" not in recorded.body


async def test_server_without_usage_is_fine(fake_llm: FakeLLM) -> None:
    usage: list[tuple[int, int]] = []
    agent = OpenAIAgent(
        "main",
        openai_config(fake_llm, stream_usage=False),
        on_usage=lambda p, c: usage.append((p, c)),
    )
    try:
        assert "".join(await collect(agent, make_request("x"))) == "Echo: x"
    finally:
        await agent.aclose()
    assert usage == []  # nothing reported, nothing counted


async def test_concurrent_answers_do_not_mix(fake_llm: FakeLLM) -> None:
    async with openai_agent(fake_llm) as agent:
        answers = await asyncio.gather(
            *(collect(agent, make_request(f"question {i}")) for i in range(20))
        )
    assert ["".join(a) for a in answers] == [f"Echo: question {i}" for i in range(20)]


async def test_abandoned_answer_hangs_up_at_once(fake_llm: FakeLLM) -> None:
    fake_llm.script_stall_mid_stream(1, 30)
    async with openai_agent(fake_llm) as agent:
        deltas = agent.stream(make_request())
        assert inspect.isasyncgen(deltas)
        assert await anext(deltas) == "Echo:"
        assert fake_llm.active == 1
        await deltas.aclose()
        # the server notices the hang-up long before its 30 s stall would end
        await asyncio.wait_for(fake_llm.wait_idle(), 5)
        assert "".join(await collect(agent, make_request("again"))) == "Echo: again"


# -- retries --------------------------------------------------------------------------------


async def test_server_error_then_success_is_one_answer(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(500)
    sleep = RecordingSleep()
    async with openai_agent(fake_llm, sleep) as agent:
        text = "".join(await collect(agent, make_request("retry me")))
    assert text == "Echo: retry me"
    assert len(fake_llm.requests) == 2
    assert sleep.delays == [RETRY_BACKOFF.delay(1, NO_JITTER)] == [0.25]


async def test_rate_limit_waits_for_retry_after(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(429, headers={"Retry-After": "7"})
    fake_llm.script_error(429, headers={"retry-after-ms": "1500", "Retry-After": "2"})
    sleep = RecordingSleep()
    async with openai_agent(fake_llm, sleep) as agent:
        assert "".join(await collect(agent, make_request("x"))) == "Echo: x"
    assert sleep.delays == [pytest.approx(7.0), pytest.approx(1.5)]
    assert len(fake_llm.requests) == 3


async def test_retry_after_beyond_the_answer_budget_gives_up_at_once(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(429, headers={"Retry-After": "20"})
    sleep = RecordingSleep()
    async with openai_agent(fake_llm, sleep, timeout=5) as agent:
        with pytest.raises(RateLimited) as caught:
            await collect(agent, make_request())
    assert caught.value.retry_after == pytest.approx(20.0)
    assert sleep.delays == []
    assert len(fake_llm.requests) == 1


async def test_retries_exhausted_raise_transient(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(503)
    fake_llm.script_error(502)
    fake_llm.script_error(500)
    sleep = RecordingSleep()
    async with openai_agent(fake_llm, sleep, max_retries=2) as agent:
        with pytest.raises(TransientError, match="HTTP 500"):
            await collect(agent, make_request())
    assert len(fake_llm.requests) == 3
    assert sleep.delays == [0.25, 0.5]  # the first two ceilings, halved by NO_JITTER


async def test_bad_key_is_an_auth_error_without_retry_or_key(fake_llm: FakeLLM) -> None:
    wrong_key = "sk-wrong-and-secret-42"
    sleep = RecordingSleep()
    async with openai_agent(fake_llm, sleep, api_key=wrong_key) as agent:
        with pytest.raises(AuthError) as caught:
            await collect(agent, make_request())
    assert "401" in str(caught.value)
    # the fake echoes the rejected key in its message, as real servers do
    assert wrong_key in str(caught.value.__cause__)
    assert wrong_key not in str(caught.value)
    assert wrong_key not in repr(agent)
    assert len(fake_llm.requests) == 1
    assert sleep.delays == []


async def test_bad_request_is_permanent_with_masked_detail(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(400, "context too long for key sk-abcdefghijkl0123")
    async with openai_agent(fake_llm) as agent:
        with pytest.raises(PermanentError, match="context too long") as caught:
            await collect(agent, make_request())
    assert "sk-abcdefghijkl0123" not in str(caught.value)
    assert len(fake_llm.requests) == 1


async def test_exhausted_quota_is_not_retried(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(429, "You exceeded your current quota", code="insufficient_quota")
    async with openai_agent(fake_llm) as agent:
        with pytest.raises(PermanentError, match="quota"):
            await collect(agent, make_request())
    assert len(fake_llm.requests) == 1


async def test_unreachable_server_is_transient() -> None:
    fake = FakeLLM()
    await fake.start()
    await fake.stop()  # the port is now closed
    async with openai_agent(fake, max_retries=1) as agent:
        with pytest.raises(TransientError, match="cannot reach"):
            await collect(agent, make_request())


# -- timeouts and broken streams --------------------------------------------------------------


@pytest.mark.parametrize("before_headers", [False, True])
async def test_first_token_timeout_is_transient(fake_llm: FakeLLM, before_headers: bool) -> None:
    fake_llm.script_stall(30, before_headers=before_headers)
    fake_llm.script_stall(30, before_headers=before_headers)
    async with openai_agent(fake_llm, first_token_timeout=0.2, max_retries=1) as agent:
        with pytest.raises(TransientError, match="first token"):
            await collect(agent, make_request())
    assert len(fake_llm.requests) == 2  # each try had its own first-token bound


async def test_slow_first_token_then_success_is_retried(fake_llm: FakeLLM) -> None:
    fake_llm.script_stall(30)
    async with openai_agent(fake_llm, first_token_timeout=0.2) as agent:
        assert "".join(await collect(agent, make_request("x"))) == "Echo: x"
    assert len(fake_llm.requests) == 2


async def test_drop_mid_stream_raises_after_the_partial_deltas(fake_llm: FakeLLM) -> None:
    fake_llm.script_drop(2, text="alpha beta gamma delta")
    seen: list[str] = []
    async with openai_agent(fake_llm) as agent:
        with pytest.raises(TransientError, match="mid-answer"):
            await collect(agent, make_request(), into=seen)
    assert seen == ["alpha", " beta"]
    assert len(fake_llm.requests) == 1  # never retried once text was shown


async def test_unfinished_but_well_formed_stream_is_not_a_whole_answer(fake_llm: FakeLLM) -> None:
    fake_llm.script_drop(2, text="alpha beta gamma", clean=True)
    seen: list[str] = []
    async with openai_agent(fake_llm) as agent:
        with pytest.raises(TransientError, match="ended before"):
            await collect(agent, make_request(), into=seen)
    assert seen == ["alpha", " beta"]


async def test_total_timeout_bounds_a_stalled_answer(fake_llm: FakeLLM) -> None:
    fake_llm.script(Behaviour(tokens=["one", " two", " three"], stall_after=2, stall=30))
    seen: list[str] = []
    async with openai_agent(fake_llm, timeout=0.4, first_token_timeout=0.3) as agent:
        with pytest.raises(TransientError, match=r"timed out after 0\.4s"):
            await collect(agent, make_request(), into=seen)
    assert seen == ["one", " two"]


async def test_total_timeout_is_not_retried(fake_llm: FakeLLM) -> None:
    fake_llm.script_stall(30)
    sleep = RecordingSleep()
    async with openai_agent(fake_llm, sleep, timeout=0.3, first_token_timeout=5) as agent:
        with pytest.raises(TransientError, match="answer timed out"):
            await collect(agent, make_request())
    assert len(fake_llm.requests) == 1
    assert sleep.delays == []


def test_retry_after_reads_openai_headers() -> None:
    def hint(headers: dict[str, str]) -> float | None:
        return retry_after(headers, WAIT_HEADERS)

    assert hint({"retry-after": "3"}) == 3.0
    assert hint({"retry-after-ms": "250"}) == 0.25
    assert hint({"retry-after-ms": "250", "retry-after": "2"}) == 0.25
    assert hint({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert hint({"retry-after": "soon"}) is None
    assert hint({"retry-after": "-5"}) == 0.0
    assert hint({"retry-after": "nan"}) is None
    assert hint({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # past: now
    assert hint({}) is None


def test_retry_backoff_grows_and_is_capped() -> None:
    almost_one = FixedRng(0.999)
    assert RETRY_BACKOFF.delay(1, NO_JITTER) == 0.25
    assert RETRY_BACKOFF.delay(1, almost_one) < 0.5
    assert RETRY_BACKOFF.delay(3, NO_JITTER) == 1.0
    assert RETRY_BACKOFF.delay(11, almost_one) <= 8.0
    assert RETRY_BACKOFF.delay(11, NO_JITTER) == 4.0


def test_config_validation() -> None:
    adapter: TypeAdapter[AgentConfig] = TypeAdapter(AgentConfig)
    echo = adapter.validate_python({"type": "echo"})
    assert isinstance(echo, EchoAgentConfig)
    assert echo.history_messages == 20
    llm = adapter.validate_python({"type": "openai", "base_url": "http://h/v1/", "model": "m"})
    assert isinstance(llm, OpenAIAgentConfig)
    assert llm.base_url == "http://h/v1"
    assert llm.api_key.get_secret_value() == ""
    for bad in (
        {"type": "openai", "base_url": "ftp://h", "model": "m"},
        {"type": "openai", "base_url": "http://h"},
        {"type": "openai", "base_url": "http://h", "model": "m", "history_messages": -1},
        {"type": "echo", "surprise": 1},
        {"type": "claude"},
    ):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


# -- fallback -------------------------------------------------------------------------------


async def test_fallback_answers_when_the_primary_is_rejected(
    fake_llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-never-logged-7777"
    secondary = EchoAgent("spare", EchoAgentConfig(type="echo", delay=0))
    async with openai_agent(fake_llm, api_key=secret) as primary:
        agent = FallbackAgent(primary, secondary)
        with caplog.at_level(logging.WARNING, logger="agents.fallback"):
            text = "".join(await collect(agent, make_request("hi")))
    assert text == "You said: hi"
    assert agent.name == "main"
    (record,) = [r for r in caplog.records if r.name == "agents.fallback"]
    assert "AuthError" in record.getMessage()
    assert "'spare'" in record.getMessage()
    assert secret not in caplog.text


async def test_fallback_never_follows_a_partial_answer(fake_llm: FakeLLM) -> None:
    fake_llm.script_drop(1, text="partial answer")
    secondary = EchoAgent("spare", EchoAgentConfig(type="echo", delay=0))
    seen: list[str] = []
    async with openai_agent(fake_llm) as primary:
        with pytest.raises(TransientError):
            await collect(FallbackAgent(primary, secondary), make_request(), into=seen)
    assert seen == ["partial"]


async def test_fallback_passes_the_secondarys_own_failure(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(401)
    fake_llm.script_error(400)
    async with (
        openai_agent(fake_llm, max_retries=0) as primary,
        openai_agent(fake_llm, max_retries=0) as secondary,
    ):
        with pytest.raises(PermanentError):
            await collect(FallbackAgent(primary, secondary), make_request())
    assert len(fake_llm.requests) == 2


# -- registry -------------------------------------------------------------------------------


def _configs(**fallbacks: str | None) -> dict[str, EchoAgentConfig]:
    return {name: EchoAgentConfig(type="echo", fallback=fb) for name, fb in fallbacks.items()}


def test_unknown_fallback_names_the_agent() -> None:
    with pytest.raises(ConfigError, match=r"agents\.main\.fallback: unknown agent 'ghost'"):
        build_agents(_configs(main="ghost", other=None))


@pytest.mark.parametrize(
    ("fallbacks", "agent"),
    [
        ({"a": "a"}, "a"),
        ({"a": "b", "b": "a"}, "a"),
        ({"x": "a", "a": "b", "b": "c", "c": "a"}, "a"),
    ],
)
def test_fallback_cycles_are_config_errors(fallbacks: dict[str, str], agent: str) -> None:
    with pytest.raises(ConfigError, match=rf"agents\.{agent}\.fallback: fallback cycle"):
        build_agents(_configs(**fallbacks))


def test_fallback_order_builds_targets_first() -> None:
    order = fallback_order(_configs(a="b", b="c", c=None, d="b"))
    assert order.index("c") < order.index("b") < order.index("a")
    assert order.index("b") < order.index("d")
    assert sorted(order) == ["a", "b", "c", "d"]


async def test_build_agents_wires_fallback_chains(fake_llm: FakeLLM) -> None:
    fake_llm.script_error(401)
    configs: dict[str, AgentConfig] = {
        "main": openai_config(fake_llm, fallback="spare"),
        "spare": EchoAgentConfig(type="echo", delay=0),
    }
    agents = build_agents(configs)
    try:
        assert list(agents) == ["main", "spare"]
        assert isinstance(agents["main"], FallbackAgent)
        assert agents["main"].secondary is agents["spare"]
        assert "".join(await collect(agents["main"], make_request("hey"))) == "You said: hey"
    finally:
        await close_agents(agents)
    primary = agents["main"].primary  # behind its circuit breaker
    assert isinstance(primary, CircuitAgent) and isinstance(primary.agent, OpenAIAgent)
    assert primary.agent._client.is_closed()


# -- echo -----------------------------------------------------------------------------------


async def test_echo_streams_words_and_counts_turns() -> None:
    sleep = RecordingSleep()
    agent = EchoAgent("echo", EchoAgentConfig(type="echo", delay=0.02), sleep=sleep)
    history: tuple[tuple[Role, str], ...] = (
        ("user", "a"),
        ("assistant", "b"),
        ("user", "c"),
        ("assistant", "d"),
    )
    deltas = await collect(agent, make_request("how are you", history))
    assert "".join(deltas) == "You said: how are you (turn 3 of this conversation)"
    assert len(deltas) == 10
    assert sleep.delays == [0.02] * 9
    first = await collect(agent, make_request("hi"))
    assert "".join(first) == "You said: hi"


# -- the fake server itself -----------------------------------------------------------------


async def test_fake_llm_speaks_plain_http(fake_llm: FakeLLM) -> None:
    headers = {"Authorization": f"Bearer {FAKE_LLM_KEY}"}
    body = {"model": "m", "messages": [{"role": "user", "content": "ping"}]}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake_llm.url}/models", headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["data"][0]["id"] == "fake-model"
        async with http.post(f"{fake_llm.url}/chat/completions", json=body) as response:
            assert response.status == 401
        url = f"{fake_llm.url}/chat/completions"
        async with http.post(url, json=body, headers=headers) as response:
            completion = await response.json()
        async with http.post(url, json={**body, "stream": True}, headers=headers) as response:
            raw = await response.text()
    assert completion["choices"][0]["message"]["content"] == "Echo: ping"
    events = raw.split("\n\n")
    assert all(e.startswith("data: ") for e in events if e)
    assert events[-2] == "data: [DONE]"
    assert '"usage"' not in raw  # only when stream_options.include_usage asks for it
    recorded = await fake_llm.wait_for_requests(4)
    assert [r.path for r in recorded] == ["/v1/models", *["/v1/chat/completions"] * 3]


async def test_fake_llm_runs_as_a_process() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.fake_llm",
        "--port",
        "0",
        "--token-interval",
        "0",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,  # the checkout, whether installed or not
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        agent = OpenAIAgent("cli", openai_config(url, api_key=""))
        try:
            assert "".join(await collect(agent, make_request("up?"))) == "Echo: up?"
        finally:
            await agent.aclose()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
