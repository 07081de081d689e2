"""A live channel, as the manager makes it: a supervisor that owns the provider, and the runtime
handed to the handler with each message the provider receives."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from agents.base import Agent
from agents.faq import FaqMatcher
from agents.routes import MessageFacts, RouteTable
from channels.callbacks import Callback, CallbackAnswer, CallbackProvider, Intake
from channels.config import ChannelConfigBase
from channels.emitter import EmitterSettings, ResponseEmitter
from channels.model import ChannelState, InboundMessage
from channels.observer import Observer
from channels.provider import ChannelProvider, InboundSink
from channels.ratelimit import TokenBucket
from channels.supervisor import Supervisor
from common.backoff import Backoff

# Builds a provider for a channel config; `sink` receives its inbound messages.
ProviderBuilder = Callable[[ChannelConfigBase, InboundSink, Observer], ChannelProvider]


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """An agent and how a channel's conversations use it."""

    agent: Agent
    system_prompt: str
    history_messages: int
    faq: FaqMatcher | None = None  # questions answered before the agent is asked
    routing: Routing | None = None  # another agent chosen per message by `[[routes]]`


@dataclass(frozen=True, slots=True)
class Routing:
    """The `[[routes]]` table and the agents its routes may name (the daemon's, without routing
    of their own: a routed message is not routed again)."""

    table: RouteTable
    agents: Mapping[str, AgentProfile]

    def choose(self, facts: MessageFacts) -> tuple[str, AgentProfile] | None:
        """The agent of the first matching route and its profile; None: the channel's agent."""
        route = self.table.choose(facts)
        if route is None or (profile := self.agents.get(route.agent)) is None:
            return None
        return route.agent, profile


class RuntimeRetired(Exception):
    """The channel stopped before this answer showed anything: whatever replaced it answers."""


@dataclass(eq=False)
class ChannelRuntime:
    """What the handler needs of a live channel; it comes with every message of the channel."""

    config: ChannelConfigBase
    provider: ChannelProvider
    agent: Agent
    system_prompt: str
    history_messages: int
    emitter: ResponseEmitter
    faq: FaqMatcher | None = None  # questions answered without asking `agent`
    routing: Routing | None = None  # another agent chosen per message
    # Set when the channel stops; resolved by the manager with the runtime that took its place
    # (a restart, an edit) or None (disabled, deleted), so queued messages follow the channel.
    _successor: asyncio.Future[ChannelRuntime | None] | None = field(
        default=None, init=False, repr=False
    )
    _answers: int = field(default=0, init=False, repr=False)  # in progress on this runtime
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def retired(self) -> bool:
        """Its channel stopped: an answer that has shown nothing yet must not begin here."""
        return self._successor is not None

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Count an answer in progress on this runtime for the body (see `settled`)."""
        self._answers += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._answers -= 1
            if self._answers == 0:
                self._idle.set()

    async def settled(self, within: float) -> bool:
        """Whether no answer is in progress here, waiting up to `within` seconds for that."""
        if self._answers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._idle.wait()
        return self._answers == 0

    def retire(self) -> None:
        """The channel's connection is closing: no new answer may begin on this runtime."""
        if self._successor is None:
            self._successor = asyncio.get_running_loop().create_future()

    def replaced_by(self, successor: ChannelRuntime | None) -> None:
        """What runs in place of this stopped runtime (None: nothing); set once."""
        if self._successor is not None and not self._successor.done():
            self._successor.set_result(successor)

    async def current(self) -> ChannelRuntime | None:
        """This runtime while its channel runs; after a stop, whatever replaced it, if anything."""
        runtime: ChannelRuntime | None = self
        while runtime is not None and runtime._successor is not None:
            # shielded: a waiter's cancellation (a /stop) must not cancel what others wait for
            runtime = await asyncio.shield(runtime._successor)
        return runtime


Accept = Callable[[InboundMessage, ChannelRuntime], Awaitable[None]]
AcceptBatch = Callable[[Sequence[InboundMessage], ChannelRuntime], Awaitable[Intake]]


class NotACallbackChannel(LookupError):
    """The channel's platform does not take HTTP callbacks."""


class LiveChannel:
    """One running channel: its supervisor, and its runtime handed to `accept` with each message."""

    def __init__(
        self,
        channel_id: str,
        version: int,
        config: ChannelConfigBase,
        profile: AgentProfile,
        *,
        build_provider: ProviderBuilder,
        accept: Accept,
        accept_batch: AcceptBatch,
        observer: Observer,
        backoff: Backoff | None = None,
    ) -> None:
        """Builds the supervisor (which builds the provider); ConfigError from the builder."""
        self.channel_id = channel_id
        self.version = version
        self._platform = platform = config.type
        self._accept = accept
        self._accept_batch = accept_batch
        self._observer = observer
        self.supervisor = Supervisor(
            channel_id,
            lambda sink: build_provider(config, sink, observer),
            sink=self._receive,
            backoff=backoff,
            on_state=lambda cid, state: observer.set_channel_state(cid, platform, state),
            on_reconnect=lambda: observer.reconnected(channel_id, platform),
        )
        emitter = ResponseEmitter(
            TokenBucket(
                rate=config.card_updates_per_second,
                burst=max(1, round(config.card_updates_per_second)),
            ),
            EmitterSettings(
                min_interval=config.card_update_interval,
                final_min_interval=config.final_update_gap,
            ),
        )
        self.runtime = ChannelRuntime(
            config=config,
            provider=self.supervisor.provider,
            agent=profile.agent,
            system_prompt=profile.system_prompt,
            history_messages=profile.history_messages,
            emitter=emitter,
            faq=profile.faq,
            routing=profile.routing,
        )

    async def _receive(self, message: InboundMessage) -> None:
        self._observer.message_received(self.channel_id, self._platform, time.time())
        await self._accept(message, self.runtime)

    async def _receive_batch(self, messages: Sequence[InboundMessage]) -> Intake:
        self.supervisor.received(len(messages))
        now = time.time()
        for _ in messages:
            self._observer.message_received(self.channel_id, self._platform, now)
        return await self._accept_batch(messages, self.runtime)

    @property
    def takes_callbacks(self) -> bool:
        """Its platform receives messages as HTTP callbacks."""
        return isinstance(self.supervisor.provider, CallbackProvider)

    async def handle_callback(self, callback: Callback) -> CallbackAnswer:
        """Hand an HTTP callback to the provider, which journals its messages through here."""
        provider = self.supervisor.provider
        if not isinstance(provider, CallbackProvider):
            raise NotACallbackChannel(self.channel_id)
        return await provider.handle_callback(callback, self._receive_batch)

    def start(self) -> None:
        """Begin connecting (the supervisor's task)."""
        self.supervisor.start()

    async def stop(self, final_state: ChannelState) -> None:
        """No answer begins on this channel any more; its connection is closed."""
        self.runtime.retire()
        await self.supervisor.stop(final_state)
