"""Prometheus metrics: one registry per daemon, the loop-lag monitor and the /metrics handler."""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform as python_platform
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from channels.model import ChannelState
from channels.observer import DROP_REASONS, UNREADABLE

CHANNEL_STATES = tuple(state.value for state in ChannelState)
REPLY_OUTCOMES = ("replied", "failed", "cancelled")
RETENTION_TABLES = ("journal", "conversation")
# What became of an HTTP callback: its messages journaled (ok), all of them seen before
# (duplicate), nothing in it for the bot (ignored), or refused before anything was journaled
CALLBACK_OUTCOMES = ("ok", "duplicate", "ignored", "rejected")

# Acks must leave within a few milliseconds of the frame or the platform redelivers, so the
# interesting range is sub-millisecond to tens of milliseconds.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# The first visible update waits for the model's first tokens: seconds, sometimes tens.
FIRST_UPDATE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
# A voice answer's first chunk waits for the model's first token; a caller hears every 100 ms
VOICE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LLM_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# A directory lookup: a file answers in microseconds, HTTP and LDAP in milliseconds to a timeout.
DIRECTORY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CHANNEL = ("channel", "platform")

M = TypeVar("M", bound=MetricWrapperBase)


def package_version() -> str:
    """The installed channeld version, or a placeholder when running from a bare checkout."""
    try:
        return importlib.metadata.version("channeld")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class Metrics:
    """Every channeld_* family, in a registry of its own: daemons sharing a process never mix."""

    def __init__(self, *, version: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._build_info = Gauge(
            "channeld_build_info", "Build information; always 1.", ["version", "python"], registry=r
        )
        python = python_platform.python_version()
        self._build_info.labels(version or package_version(), python).set(1)
        self._up = Gauge(
            "channeld_channel_up",
            "1 when the platform session is established.",
            CHANNEL,
            registry=r,
        )
        self._state = Gauge(
            "channeld_channel_state",
            "1 for the channel's current state, 0 for the others.",
            [*CHANNEL, "state"],
            registry=r,
        )
        self._reconnects = Counter(
            "channeld_channel_reconnects",
            "Sessions re-established after the first one.",
            CHANNEL,
            registry=r,
        )
        self._last_event = Gauge(
            "channeld_channel_last_event_timestamp_seconds",
            "Unix time of the last inbound message.",
            CHANNEL,
            registry=r,
        )
        self._received = Counter(
            "channeld_messages_received", "Inbound messages accepted.", CHANNEL, registry=r
        )
        self._duplicates = Counter(
            "channeld_messages_duplicate",
            "Redelivered messages acked and dropped.",
            CHANNEL,
            registry=r,
        )
        self._ignored = Counter(
            "channeld_messages_ignored",
            "Messages not for the bot: group messages without a mention; on webhook platforms"
            " also the bot's own messages echoed back, system messages, other chats and events.",
            CHANNEL,
            registry=r,
        )
        self._invalid = Counter(
            "channeld_messages_invalid", "Payloads that could not be parsed.", CHANNEL, registry=r
        )
        self._dropped = Counter(
            "channeld_frames_dropped",
            "Frames and messages dropped, by reason: unreadable or unexpected, nested too deep,"
            " or refused by the database (acked anyway); the session stays up.",
            [*CHANNEL, "reason"],
            registry=r,
        )
        self._ack_latency = Histogram(
            "channeld_ack_latency_seconds",
            "From frame received to ack sent.",
            CHANNEL,
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self._first_update = Histogram(
            "channeld_reply_first_update_seconds",
            "From message received to the first update visible to the user.",
            CHANNEL,
            buckets=FIRST_UPDATE_BUCKETS,
            registry=r,
        )
        self._replies = Counter(
            "channeld_replies", "Replies by outcome.", [*CHANNEL, "outcome"], registry=r
        )
        self._platform_requests = Counter(
            "channeld_platform_requests",
            "Calls to the platform's API by endpoint and HTTP status (or error class).",
            [*CHANNEL, "endpoint", "status"],
            registry=r,
        )
        self._llm_seconds = Histogram(
            "channeld_llm_request_seconds",
            "One whole answer from the agent.",
            ["agent"],
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self._llm_tokens = Counter(
            "channeld_llm_tokens", "Tokens reported by the model.", ["agent", "kind"], registry=r
        )
        self._circuit_open = Gauge(
            "channeld_agent_circuit_open",
            "1 while the agent's circuit breaker is open or half-open (skipped, the fallback"
            " answers), 0 while closed.",
            ["agent"],
            registry=r,
        )
        self._loop_lag = Histogram(
            "channeld_event_loop_lag_seconds",
            "How late a timer on the event loop fired.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self._pruned = Counter(
            "channeld_retention_deleted_rows",
            "Rows deleted once past their retention: journal rows, conversations.",
            ["table"],
            registry=r,
        )
        for table in RETENTION_TABLES:
            self._pruned.labels(table)
        self._answers = Gauge(
            "channeld_answers",
            "Answers across every channel: running (holding one of max_concurrent_answers)"
            " or waiting for a slot.",
            ["state"],
            registry=r,
        )
        self._callbacks = Counter(
            "channeld_callbacks",
            "HTTP callbacks by outcome (ok, duplicate, ignored, rejected) and, for a rejection,"
            " its reason; a callback for no known channel is counted with empty labels.",
            [*CHANNEL, "outcome", "reason"],
            registry=r,
        )
        self._callback_seconds = Histogram(
            "channeld_callback_seconds",
            "From a callback's arrival to its answer, the journal write included.",
            CHANNEL,
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self._voice_calls = Gauge(
            "channeld_voice_calls_active",
            "Voice calls started and not ended, by channel and cloud (zego, aliyun).",
            ["channel", "provider"],
            registry=r,
        )
        self._voice_turns = Counter(
            "channeld_voice_turns",
            "Voice rounds answered through the LLM endpoint, by outcome: answered, failed (the"
            " agent failed: an apology was spoken), cut (the cloud hung up mid-answer).",
            ["channel", "provider", "outcome"],
            registry=r,
        )
        self._voice_first_chunk = Histogram(
            "channeld_voice_first_chunk_seconds",
            "From a voice agent's request to the first chunk of the answer sent back.",
            ["channel", "provider"],
            buckets=VOICE_BUCKETS,
            registry=r,
        )
        self._user_resolutions = Counter(
            "channeld_user_resolutions",
            "Senders resolved to users, by mapper (file, http, ldap) and outcome: hit, miss or"
            " error for the directory's answer, cached for one from memory, created or refused"
            " for what on_miss did with someone the directory did not know or could not say.",
            ["mapper", "outcome"],
            registry=r,
        )
        self._directory_seconds = Histogram(
            "channeld_directory_seconds",
            "One directory lookup, answered or failed.",
            ["mapper"],
            buckets=DIRECTORY_BUCKETS,
            registry=r,
        )
        self._faq_answers = Counter(
            "channeld_faq_answers",
            "Questions answered from the [[faq]] table, without a model call.",
            ["channel"],
            registry=r,
        )
        self._routes = Counter(
            "channeld_route",
            "Answers given by the agent a [[routes]] entry chose in place of the channel's own.",
            ["channel", "agent"],
            registry=r,
        )
        # Label sets created per channel, so that forgetting a channel removes every one of them.
        self._series: dict[str, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}

    def _child(self, metric: M, channel: str, *labels: str) -> M:
        self._series.setdefault(channel, set()).add((metric, (channel, *labels)))
        return metric.labels(channel, *labels)

    def _touch(self, channel: str, platform: str) -> None:
        """Create the channel's series at zero so that rate() sees the first increment."""
        if channel in self._series:
            return
        for metric in (
            self._reconnects,
            self._received,
            self._duplicates,
            self._ignored,
            self._invalid,
            self._ack_latency,
            self._first_update,
        ):
            self._child(metric, channel, platform)
        for outcome in REPLY_OUTCOMES:
            self._child(self._replies, channel, platform, outcome)
        for reason in DROP_REASONS:
            self._child(self._dropped, channel, platform, reason)
        self._child(self._faq_answers, channel)

    def set_channel_state(self, channel: str, platform: str, state: str) -> None:
        """Record the channel's state (a `ChannelState` value); `up` follows `connected`."""
        if state not in CHANNEL_STATES:
            raise ValueError(f"unknown channel state {state!r}")
        self._touch(channel, platform)
        for candidate in CHANNEL_STATES:
            self._child(self._state, channel, platform, candidate).set(
                1 if candidate == state else 0
            )
        self._child(self._up, channel, platform).set(1 if state == ChannelState.CONNECTED else 0)

    def reconnected(self, channel: str, platform: str) -> None:
        """A session was re-established after an earlier one ended."""
        self._touch(channel, platform)
        self._child(self._reconnects, channel, platform).inc()

    def message_received(self, channel: str, platform: str, at: float) -> None:
        """An inbound message was accepted; `at` is its unix time."""
        self._touch(channel, platform)
        self._child(self._received, channel, platform).inc()
        self._child(self._last_event, channel, platform).set(at)

    def message_duplicate(self, channel: str, platform: str) -> None:
        """A redelivery was acked and dropped."""
        self._touch(channel, platform)
        self._child(self._duplicates, channel, platform).inc()

    def message_ignored(self, channel: str, platform: str, count: int = 1) -> None:
        """Messages (a group message without a mention, a webhook's echo) were not for the bot."""
        self._touch(channel, platform)
        self._child(self._ignored, channel, platform).inc(count)

    def message_invalid(self, channel: str, platform: str) -> None:
        """A payload could not be parsed."""
        self._touch(channel, platform)
        self._child(self._invalid, channel, platform).inc()

    def frame_dropped(self, channel: str, platform: str, reason: str = UNREADABLE) -> None:
        """A frame or message was dropped without ending the session; `reason` is a DROP_REASONS."""
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}")
        self._touch(channel, platform)
        self._child(self._dropped, channel, platform, reason).inc()

    def ack_latency(self, channel: str, platform: str, seconds: float) -> None:
        """Time from a frame's arrival to its ack."""
        self._touch(channel, platform)
        self._child(self._ack_latency, channel, platform).observe(seconds)

    def reply_first_update(self, channel: str, platform: str, seconds: float) -> None:
        """Time from a message's arrival to the first update the user could see."""
        self._touch(channel, platform)
        self._child(self._first_update, channel, platform).observe(seconds)

    def reply(self, channel: str, platform: str, outcome: str) -> None:
        """A reply ended: `replied`, `failed` or `cancelled`."""
        if outcome not in REPLY_OUTCOMES:
            raise ValueError(f"unknown reply outcome {outcome!r}")
        self._touch(channel, platform)
        self._child(self._replies, channel, platform, outcome).inc()

    def platform_request(
        self, channel: str, platform: str, endpoint: str, status: int | str
    ) -> None:
        """One platform API call; `endpoint` is a fixed name, never a URL with ids in it."""
        self._touch(channel, platform)
        self._child(self._platform_requests, channel, platform, endpoint, str(status)).inc()

    def callback(self, channel: str, platform: str, outcome: str, reason: str = "") -> None:
        """One HTTP callback answered; `outcome` is a CALLBACK_OUTCOMES, `reason` a fixed name."""
        if outcome not in CALLBACK_OUTCOMES:
            raise ValueError(f"unknown callback outcome {outcome!r}")
        self._child(self._callbacks, channel, platform, outcome, reason).inc()

    def callback_latency(self, channel: str, platform: str, seconds: float) -> None:
        """Time from a callback's arrival to its answer."""
        self._child(self._callback_seconds, channel, platform).observe(seconds)

    def voice_calls_active(self, channel: str, provider: str, count: int) -> None:
        """How many calls are active on a channel through a cloud."""
        self._child(self._voice_calls, channel, provider).set(count)

    def voice_turn(self, channel: str, provider: str, outcome: str) -> None:
        """One voice round answered (or failed, or cut)."""
        self._child(self._voice_turns, channel, provider, outcome).inc()

    def voice_first_chunk(self, channel: str, provider: str, seconds: float) -> None:
        """Time from a voice request to its first answer chunk."""
        self._child(self._voice_first_chunk, channel, provider).observe(seconds)

    def llm_request(self, agent: str, seconds: float) -> None:
        """One whole answer from an agent."""
        self._llm_seconds.labels(agent).observe(seconds)

    def faq_answer(self, channel: str) -> None:
        """One question answered from the FAQ."""
        self._child(self._faq_answers, channel).inc()

    def route(self, channel: str, agent: str) -> None:
        """One answer routed to `agent` by a [[routes]] entry."""
        self._child(self._routes, channel, agent).inc()

    def user_resolution(self, mapper: str, outcome: str) -> None:
        """One step of resolving a sender (channels/users/resolver.py, Outcome)."""
        self._user_resolutions.labels(mapper, outcome).inc()

    def directory_latency(self, mapper: str, seconds: float) -> None:
        """How long one directory lookup took."""
        self._directory_seconds.labels(mapper).observe(seconds)

    def llm_tokens(self, agent: str, prompt: int, completion: int) -> None:
        """Token usage of one answer, as the model reported it."""
        self._llm_tokens.labels(agent, "prompt").inc(prompt)
        self._llm_tokens.labels(agent, "completion").inc(completion)

    def agent_circuit(self, agent: str, is_open: bool) -> None:
        """An agent's circuit breaker opened (or is half-open) or closed."""
        self._circuit_open.labels(agent).set(1 if is_open else 0)

    def loop_lag(self, seconds: float) -> None:
        """How late the loop ran a timer."""
        self._loop_lag.observe(seconds)

    def rows_pruned(self, table: str, count: int) -> None:
        """Rows of a RETENTION_TABLES table deleted past their retention."""
        if table not in RETENTION_TABLES:
            raise ValueError(f"unknown retention table {table!r}")
        self._pruned.labels(table).inc(count)

    def watch_answers(self, running: Callable[[], int], waiting: Callable[[], int]) -> None:
        """Read the answer slots' counts at every scrape."""
        self._answers.labels("running").set_function(running)
        self._answers.labels("waiting").set_function(waiting)

    def remove_channel(self, channel: str) -> None:
        """Forget every series of a deleted channel."""
        for metric, labels in self._series.pop(channel, set()):
            metric.remove(*labels)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics for the admin listener."""

    async def handle(_: web.Request) -> web.Response:
        body, content_type = metrics.render()
        # aiohttp's content_type argument refuses parameters such as version and charset.
        return web.Response(body=body, headers={"Content-Type": content_type})

    return handle


class EventLoopLagMonitor:
    """Sleeps a fixed interval in an owned task and records how late each wake-up was."""

    def __init__(self, metrics: Metrics, interval: float = 0.25) -> None:
        self._metrics = metrics
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the sampling task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin sampling on the running loop; idempotent."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        """Cancel the sampling task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller is being cancelled too: let that through

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self._interval)
            # The loop may fire a timer up to its clock resolution early: clamp at zero.
            self._metrics.loop_lag(max(0.0, loop.time() - before - self._interval))
