"""Contracts between the channel manager, the handler, the emitter and platform providers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from channels.model import ChannelId, ChannelState, Delivered, InboundMessage, SenderProfile
from common.errors import ChannelError


class ProfileUnavailable(ChannelError):
    """The app may not read the sender's profile: `permission` names what to grant."""

    def __init__(self, message: str, permission: str) -> None:
        super().__init__(message)
        self.permission = permission


# The provider hands every inbound message to this sink and acks the platform once it returns:
# returning means "journaled" (or a recognised duplicate). Raising means "do not ack".
InboundSink = Callable[[InboundMessage], Awaitable[None]]


class ReplyStream(Protocol):
    """One answer on its way to the user; the emitter owns timing, the stream platform calls."""

    @property
    def delivered(self) -> Delivered: ...

    async def update(self, text_so_far: str) -> None: ...

    async def finish(self, final_text: str) -> None: ...

    async def fail(self, reason: str, partial_text: str = "") -> None: ...


class ChannelProvider(Protocol):
    """One connection to one IM platform account."""

    @property
    def channel_id(self) -> ChannelId: ...

    @property
    def platform(self) -> str: ...

    @property
    def state(self) -> ChannelState: ...

    @property
    def last_frame_at(self) -> float:
        """Monotonic time of the last frame (pings included) seen on the live session."""
        ...

    async def start(self) -> None:
        """Return once the platform session is established, or raise a classified error."""
        ...

    async def wait_closed(self) -> None:
        """Return, or raise why, when the session ended."""
        ...

    async def close(self) -> None:
        """Idempotent, bounded: the socket closes at once and no task is left behind; the HTTP
        client stays open for replies already under way and closes when the last one ends."""
        ...

    async def send(self, message: InboundMessage, text: str) -> None:
        """Send a plain (markdown) answer to the chat `message` came from."""
        ...

    async def open_stream(self, message: InboundMessage) -> ReplyStream:
        """Begin a streamed answer to `message` (a card when possible)."""
        ...

    async def resume_stream(self, message: InboundMessage, card_id: str, shown: str) -> ReplyStream:
        """Take over a card left streaming by an earlier process, showing `shown` so far."""
        ...

    async def sender_profile(self, message: InboundMessage) -> SenderProfile:
        """Ask the platform who sent `message` (e-mail, mobile, employee number), bounded by the
        API client's timeout; never on the ack path. Raises ProfileUnavailable when the app lacks
        the permission, another classified ChannelError when the call failed."""
        ...


# What a supervisor is handed to build the provider it owns; it passes the sink the provider uses.
ProviderFactory = Callable[[InboundSink], ChannelProvider]
