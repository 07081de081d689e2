"""What the channel machinery reports as it works; the daemon turns it into metrics."""

from __future__ import annotations

from typing import Protocol

# Why something was dropped (the `reason` label of channeld_frames_dropped_total): a frame that
# could not be read, one nested deeper than the JSON decoder goes, a message the database refused.
UNREADABLE = "unreadable"
TOO_DEEP = "too_deep"
UNSTORABLE = "unstorable"
DROP_REASONS = (UNREADABLE, TOO_DEEP, UNSTORABLE)


class Observer(Protocol):
    """Cheap, synchronous, never raising: called on hot paths."""

    def set_channel_state(self, channel: str, platform: str, state: str) -> None: ...
    def reconnected(self, channel: str, platform: str) -> None: ...
    def message_received(self, channel: str, platform: str, at: float) -> None: ...
    def message_duplicate(self, channel: str, platform: str) -> None: ...
    def message_ignored(self, channel: str, platform: str) -> None: ...
    def message_invalid(self, channel: str, platform: str) -> None: ...
    def frame_dropped(self, channel: str, platform: str, reason: str = UNREADABLE) -> None: ...
    def ack_latency(self, channel: str, platform: str, seconds: float) -> None: ...
    def reply_first_update(self, channel: str, platform: str, seconds: float) -> None: ...
    def reply(self, channel: str, platform: str, outcome: str) -> None: ...
    def platform_request(
        self, channel: str, platform: str, endpoint: str, status: int | str
    ) -> None: ...
    def llm_request(self, agent: str, seconds: float) -> None: ...
    def faq_answer(self, channel: str) -> None: ...
    def route(self, channel: str, agent: str) -> None: ...
    def user_resolution(self, mapper: str, outcome: str) -> None: ...
    def directory_latency(self, mapper: str, seconds: float) -> None: ...


class NullObserver:
    """Reports nowhere; the default in unit tests."""

    def set_channel_state(self, channel: str, platform: str, state: str) -> None:
        """Ignored."""

    def reconnected(self, channel: str, platform: str) -> None:
        """Ignored."""

    def message_received(self, channel: str, platform: str, at: float) -> None:
        """Ignored."""

    def message_duplicate(self, channel: str, platform: str) -> None:
        """Ignored."""

    def message_ignored(self, channel: str, platform: str) -> None:
        """Ignored."""

    def message_invalid(self, channel: str, platform: str) -> None:
        """Ignored."""

    def frame_dropped(self, channel: str, platform: str, reason: str = UNREADABLE) -> None:
        """Ignored."""

    def ack_latency(self, channel: str, platform: str, seconds: float) -> None:
        """Ignored."""

    def reply_first_update(self, channel: str, platform: str, seconds: float) -> None:
        """Ignored."""

    def reply(self, channel: str, platform: str, outcome: str) -> None:
        """Ignored."""

    def platform_request(
        self, channel: str, platform: str, endpoint: str, status: int | str
    ) -> None:
        """Ignored."""

    def llm_request(self, agent: str, seconds: float) -> None:
        """Ignored."""

    def faq_answer(self, channel: str) -> None:
        """Ignored."""

    def route(self, channel: str, agent: str) -> None:
        """Ignored."""

    def user_resolution(self, mapper: str, outcome: str) -> None:
        """Ignored."""

    def directory_latency(self, mapper: str, seconds: float) -> None:
        """Ignored."""
