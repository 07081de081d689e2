"""Build the configured agents, wire their fallbacks, and close them all at shutdown."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from agents.base import Agent
from agents.circuit import CircuitAgent, CircuitBreaker, CircuitObserver
from agents.config import AgentConfig, EchoAgentConfig
from agents.echo import EchoAgent
from agents.fallback import FallbackAgent
from agents.openai_agent import OpenAIAgent, UsageCallback
from common.errors import ConfigError

logger = logging.getLogger(__name__)

NamedUsageCallback = Callable[[str, int, int], None]


def fallback_order(configs: Mapping[str, AgentConfig]) -> list[str]:
    """Agent names ordered so that each one's fallback comes before it; ConfigError if unsound."""
    order: list[str] = []
    done: set[str] = set()
    for name in configs:
        chain: list[str] = []
        current: str | None = name
        while current is not None and current not in done:
            if current in chain:
                cycle = " -> ".join([*chain[chain.index(current) :], current])
                raise ConfigError(f"agents.{current}.fallback: fallback cycle {cycle}")
            chain.append(current)
            target = configs[current].fallback
            if target is not None and target not in configs:
                known = ", ".join(sorted(configs))
                raise ConfigError(
                    f"agents.{current}.fallback: unknown agent {target!r} (defined: {known})"
                )
            current = target
        for member in reversed(chain):
            order.append(member)
            done.add(member)
    return order


def build_agent(name: str, config: AgentConfig, *, on_usage: UsageCallback | None = None) -> Agent:
    """One agent without its fallback."""
    if isinstance(config, EchoAgentConfig):
        return EchoAgent(name, config)
    return OpenAIAgent(name, config, on_usage=on_usage)


def build_breakers(
    configs: Mapping[str, AgentConfig],
    *,
    observer: CircuitObserver | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, CircuitBreaker]:
    """One circuit breaker per configured agent, from its circuit_failures and circuit_cooldown."""
    return {
        name: CircuitBreaker(
            name,
            failures=config.circuit_failures,
            cooldown=config.circuit_cooldown,
            clock=clock,
            observer=observer,
        )
        for name, config in configs.items()
    }


def build_agents(
    configs: Mapping[str, AgentConfig],
    *,
    on_usage: NamedUsageCallback | None = None,
    breakers: Mapping[str, CircuitBreaker] | None = None,
) -> dict[str, Agent]:
    """Every configured agent by name, behind its breaker, wrapped with its fallback chain.

    `on_usage(agent_name, prompt_tokens, completion_tokens)` reports token usage per agent;
    `breakers` (from build_breakers) lets the caller watch them; without it each gets its own.
    """
    order = fallback_order(configs)  # validates before any client is created
    if breakers is None:
        breakers = build_breakers(configs)
    agents: dict[str, Agent] = {}
    for name in order:
        usage = functools.partial(on_usage, name) if on_usage is not None else None
        agent: Agent = CircuitAgent(
            build_agent(name, configs[name], on_usage=usage), breakers[name]
        )
        target = configs[name].fallback
        # The target was built first (fallback_order), already wrapped with its own fallback.
        agents[name] = agent if target is None else FallbackAgent(agent, agents[target])
    return {name: agents[name] for name in configs}


async def close_agents(agents: Iterable[Agent] | Mapping[str, Agent]) -> None:
    """Close every agent; one failing to close does not keep the others open."""
    members = list(agents.values()) if isinstance(agents, Mapping) else list(agents)
    results = await asyncio.gather(*(a.aclose() for a in members), return_exceptions=True)
    for agent, result in zip(members, results, strict=True):
        if isinstance(result, Exception):
            logger.warning("agent %r did not close cleanly: %r", agent.name, result)
        elif isinstance(result, BaseException):
            raise result
