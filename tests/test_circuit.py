"""The circuit breaker per agent: its state machine, its one trial call, and the whole path from a
failing fake LLM through the fallback to the metric and the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.base import AgentRequest
from agents.circuit import CircuitAgent, CircuitBreaker, CircuitOpen, CircuitState
from agents.config import AgentConfig, EchoAgentConfig
from agents.registry import build_agents, build_breakers, close_agents
from common.errors import TransientError
from daemon.api import AdminApi
from daemon.metrics import Metrics
from tests.agents_support import collect, fake_llm_fixture, make_request, openai_config
from tools.fake_llm import FakeLLM

__all__ = ["fake_llm_fixture"]  # registers the `fake_llm` fixture in this module


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedAgent:
    """A leaf agent: each answer waits for `gate`, then says "ok" or raises `error`."""

    def __init__(self) -> None:
        self.name = "gated"
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def stream(self, request: AgentRequest) -> AsyncIterator[str]:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        yield "ok"

    async def aclose(self) -> None:
        return None


def _breaker(clock: FakeClock, failures: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    wall = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return CircuitBreaker(
        "main",
        failures=failures,
        cooldown=cooldown,
        clock=clock,
        wall_clock=lambda: wall + timedelta(seconds=clock.now),
    )


# -- the state machine ----------------------------------------------------------------------


def test_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=3)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.allow()
    breaker.succeeded()  # a success between failures starts the count again
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot() == {"state": "closed", "failures": 2, "opened_at": None}
    assert breaker.allow()
    breaker.failed()
    assert breaker.snapshot()["state"] == "open"
    assert not breaker.allow()
    assert breaker.snapshot() == {
        "state": "open",
        "failures": 3,
        "opened_at": "2026-01-02T03:20:45+00:00",
    }


def test_one_trial_after_the_cooldown_closes_or_reopens() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=1, cooldown=30)
    breaker.failed()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.failed()  # the trial failed: open again, for a whole new cooldown
    assert breaker.snapshot()["state"] == "open"
    assert breaker.snapshot()["opened_at"] == "2026-01-02T03:21:15+00:00"  # 1,030 s in
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.snapshot()["state"] == "closed"
    assert breaker.snapshot() == {"state": "closed", "failures": 0, "opened_at": None}
    assert breaker.allow()
    assert breaker.allow()  # closed: no limit on calls


def test_an_abandoned_trial_frees_the_slot_without_a_verdict() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=1, cooldown=5)
    breaker.failed()
    clock.now += 5
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()  # the next call may try


def test_the_observer_hears_every_change() -> None:
    clock = FakeClock()
    heard: list[tuple[str, bool]] = []
    breaker = CircuitBreaker(
        "main", failures=1, cooldown=5, clock=clock, observer=lambda *a: heard.append(a)
    )
    breaker.failed()
    clock.now += 5
    assert breaker.allow()
    breaker.succeeded()
    assert heard == [("main", False), ("main", True), ("main", False)]


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 30.0), (5, 0.0), (5, -1.0)])
def test_bad_thresholds_are_refused(failures: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker("main", failures=failures, cooldown=cooldown)


@pytest.mark.parametrize(
    "bad", [{"circuit_failures": 0}, {"circuit_cooldown": 0}, {"circuit_cooldown": -2}]
)
def test_config_bounds(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="circuit_"):
        EchoAgentConfig.model_validate({"type": "echo", **bad})
    config = EchoAgentConfig(type="echo")
    assert (config.circuit_failures, config.circuit_cooldown) == (5, 30.0)


# -- the agent behind its breaker -----------------------------------------------------------


async def test_only_one_trial_call_runs_while_half_open() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=1, cooldown=10)
    leaf = GatedAgent()
    agent = CircuitAgent(leaf, breaker)
    breaker.failed()
    clock.now += 10
    trial = asyncio.create_task(collect(agent, make_request()))
    await leaf.started.wait()
    with pytest.raises(CircuitOpen):
        await collect(agent, make_request())  # skipped at once while the trial runs
    assert leaf.calls == 1
    leaf.gate.set()
    assert await trial == ["ok"]
    assert breaker.state is CircuitState.CLOSED


async def test_a_late_failure_from_before_the_opening_leaves_the_trial_alone() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=1, cooldown=10)
    early, trial = GatedAgent(), GatedAgent()
    early.error = TransientError("late")
    late_call = asyncio.create_task(collect(CircuitAgent(early, breaker), make_request()))
    await early.started.wait()  # let through while closed
    breaker.failed()  # another call opened it meanwhile
    clock.now += 10
    trial_call = asyncio.create_task(collect(CircuitAgent(trial, breaker), make_request()))
    await trial.started.wait()
    early.gate.set()
    with pytest.raises(TransientError, match="late"):
        await late_call
    assert breaker.snapshot()["state"] == "half_open"  # not reopened by a stale verdict
    assert breaker.snapshot()["failures"] == 1
    with pytest.raises(CircuitOpen):  # the trial still holds the one slot
        await collect(CircuitAgent(GatedAgent(), breaker), make_request())
    trial.gate.set()
    assert await trial_call == ["ok"]
    assert breaker.snapshot()["state"] == "closed"


async def test_a_failed_trial_reopens_and_skips_without_a_call() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=2, cooldown=10)
    leaf = GatedAgent()
    leaf.gate.set()
    leaf.error = TransientError("down")
    agent = CircuitAgent(leaf, breaker)
    for _ in range(2):
        with pytest.raises(TransientError, match="down"):
            await collect(agent, make_request())
    with pytest.raises(CircuitOpen):
        await collect(agent, make_request())
    assert leaf.calls == 2
    clock.now += 10
    with pytest.raises(TransientError, match="down"):
        await collect(agent, make_request())  # the trial
    assert leaf.calls == 3
    assert breaker.state is CircuitState.OPEN


async def test_a_cancelled_answer_is_not_a_failure() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=1, cooldown=10)
    leaf = GatedAgent()
    agent = CircuitAgent(leaf, breaker)
    task = asyncio.create_task(collect(agent, make_request()))
    await leaf.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.snapshot() == {"state": "closed", "failures": 0, "opened_at": None}


async def test_a_stop_after_text_closes_a_half_open_breaker() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, failures=1, cooldown=10)
    leaf = GatedAgent()
    leaf.gate.set()
    agent = CircuitAgent(leaf, breaker)
    breaker.failed()
    clock.now += 10
    deltas = agent.stream(make_request())
    assert await anext(deltas) == "ok"
    await cast(Any, deltas).aclose()  # the user's /stop: the model was answering
    assert breaker.state is CircuitState.CLOSED


# -- end to end: fake LLM, fallback, metric, admin API --------------------------------------


def _circuit_metric(metrics: Metrics, agent: str) -> float:
    text = metrics.render()[0].decode()
    prefix = f'channeld_agent_circuit_open{{agent="{agent}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_breaker_opens_fallback_answers_trial_closes(fake_llm: FakeLLM) -> None:
    clock = FakeClock()
    metrics = Metrics()
    configs: dict[str, AgentConfig] = {
        "main": openai_config(
            fake_llm, max_retries=0, fallback="spare", circuit_failures=2, circuit_cooldown=30
        ),
        "spare": EchoAgentConfig(type="echo", delay=0),
    }
    breakers = build_breakers(configs, observer=metrics.agent_circuit, clock=clock)
    agents = build_agents(configs, breakers=breakers)
    view = [{"name": name, "type": config.type} for name, config in configs.items()]
    # the agents route reads neither the channel service nor the store
    api = AdminApi(cast(Any, None), cast(Any, None), view, circuits=breakers)
    app = web.Application()
    api.add_routes(app)
    main = agents["main"]

    async def circuit() -> dict[str, Any]:
        response = await client.get("/api/v1/agents")
        assert response.status == 200
        listed = {a["name"]: a for a in (await response.json())["agents"]}
        assert listed["spare"]["circuit"]["state"] == "closed"
        return cast(dict[str, Any], listed["main"]["circuit"])

    async with TestClient(TestServer(app)) as client:
        try:
            assert (await circuit())["state"] == "closed"
            assert _circuit_metric(metrics, "main") == 0
            for count in (1, 2):
                fake_llm.script_error(503)
                answer = "".join(await collect(main, make_request("hi")))
                assert answer == "You said: hi"  # the fallback
                assert len(fake_llm.requests) == count
            opened = await circuit()
            assert opened["state"] == "open"
            assert opened["failures"] == 2
            assert opened["opened_at"] is not None
            assert _circuit_metric(metrics, "main") == 1

            answer = "".join(await collect(main, make_request("again")))
            assert answer == "You said: again"
            assert len(fake_llm.requests) == 2  # skipped: no request to the failing model

            clock.now += 30
            assert (await circuit())["state"] == "half_open"
            assert _circuit_metric(metrics, "main") == 1
            fake_llm.script_reply("back online")
            assert "".join(await collect(main, make_request("trial"))) == "back online"
            assert len(fake_llm.requests) == 3  # the one trial request
            assert await circuit() == {"state": "closed", "failures": 0, "opened_at": None}
            assert _circuit_metric(metrics, "main") == 0
        finally:
            await close_agents(agents)
