"""CardReplyStream, the card-then-messages state machine both platforms share.

The platform calls are the leaf: a recording card that refuses on demand (retryable or for
good), and a recording sender. What the user sees is asserted: never the same text twice.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

import pytest

from channels.cards import CardReplyStream
from channels.model import ChannelId, ChatType, InboundMessage, Sender
from common.errors import ChannelError, PermanentError, TransientError

MESSAGE = InboundMessage(
    channel_id=ChannelId("c1"),
    platform="toy",
    message_id="m1",
    chat_id="chat",
    chat_type=ChatType.DIRECT,
    sender=Sender("user"),
    text="question",
    received_at=datetime.now(UTC),
)


class RecordingSender:
    """Records each message; the calls numbered in `fail_calls` fail (transient)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[tuple[str, str]] = []
        self.fail_calls: set[int] = set()
        self.calls = 0

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise TransientError("send failed")
        self.sent.append((purpose, text))


class RecordingCard(CardReplyStream):
    """A card platform whose calls fail as scripted; `fit` bytes of text fit on the card."""

    def __init__(self, *, create: bool = True, fit: int = 1000, limit: int = 40) -> None:
        self.sender = RecordingSender(limit)
        super().__init__(self.sender, MESSAGE)
        self.create = create
        self.fit = fit
        self.failures: deque[ChannelError | None] = deque()
        self.calls: list[tuple[str, str]] = []
        self.settled = 0

    def _next(self, call: str, text: str) -> None:
        self.calls.append((call, text))
        failure = self.failures.popleft() if self.failures else None
        if failure is not None:
            raise failure

    async def _create_card(self) -> str | None:
        if not self.create:
            return None
        self._next("create", "")
        return "card-1"

    async def _show(self, text: str) -> None:
        self._next("show", text)
        self._card_text = text

    async def _end_card(self, text: str, *, failed: bool) -> None:
        self._next("fail" if failed else "end", text)
        self._card_text = text

    def _fit(self, text: str) -> str:
        return text[: self.fit]

    async def _settle_stopped_card(self) -> None:
        self.settled += 1

    def seen(self) -> str:
        """Everything the user was shown: the card's last text, then the messages."""
        return self._card_text + "".join(text for _, text in self.sender.sent)


async def test_a_card_that_streams_and_ends_sends_no_message() -> None:
    card = RecordingCard()
    await card.begin()
    await card.update("Hel")
    await card.update("Hel")  # unchanged text: no call
    await card.update("Hello")
    await card.finish("Hello world")
    await card.finish("Hello world")  # once only
    await card.update("Hello world, late")  # the card has ended: no call
    assert card.calls == [
        ("create", ""),
        ("show", "Hel"),
        ("show", "Hello"),
        ("end", "Hello world"),
    ]
    assert card.sender.sent == []
    assert card.delivered.text == "Hello world"
    assert card.delivered.card_id == "card-1"


async def test_no_card_means_the_whole_answer_goes_as_messages() -> None:
    card = RecordingCard(create=False)
    await card.begin()
    await card.update("ignored")
    await card.finish("the answer")
    assert card.calls == []
    assert card.sender.sent == [("answer-0", "the answer")]
    assert card.delivered.card_id is None


async def test_a_refused_creation_falls_back_to_messages() -> None:
    card = RecordingCard()
    card.failures.append(PermanentError("no permission"))
    await card.begin()
    await card.update("the")  # no card: no call
    assert card.calls == [("create", "")]
    await card.finish("the answer")
    assert card.sender.sent == [("answer-0", "the answer")]


async def test_a_card_refused_midway_keeps_its_text_and_the_rest_follows_once() -> None:
    card = RecordingCard()
    await card.begin()
    await card.update("First part.")
    card.failures.append(PermanentError("streaming refused"))
    await card.update("First part. Second")
    await card.update("First part. Second part")  # the card stopped: no call
    assert card.calls[-1] == ("show", "First part. Second")
    await card.finish("First part. Second part.")
    assert card.sender.sent == [("answer-0", "(continued)\n\nSecond part.")]
    assert card.settled == 1  # the stopped card is not left "thinking"
    assert card.seen().count("First part.") == 1
    assert card.delivered.text == "First part.(continued)\n\nSecond part."


async def test_retryable_errors_reach_the_emitter_and_a_retry_continues() -> None:
    card = RecordingCard()
    await card.begin()
    card.failures.append(TransientError("429"))
    with pytest.raises(TransientError):
        await card.update("Hi")
    await card.update("Hi")  # still a card: the emitter skips that update and tries again
    assert card.calls[-1] == ("show", "Hi")
    card.failures.append(TransientError("503"))
    with pytest.raises(TransientError):
        await card.finish("Hi there")
    await card.finish("Hi there")  # the emitter's retry
    assert card.calls[-2:] == [("end", "Hi there"), ("end", "Hi there")]
    assert card.sender.sent == []


async def test_a_final_update_refused_for_good_sends_the_rest_and_settles() -> None:
    card = RecordingCard()
    await card.begin()
    await card.update("Partial")
    card.failures.append(PermanentError("card gone"))
    await card.finish("Partial answer")
    assert card.sender.sent == [("answer-0", "(continued)\n\nanswer")]
    assert card.settled == 1


async def test_what_the_card_cannot_hold_follows_as_messages() -> None:
    card = RecordingCard(fit=10)
    await card.begin()
    await card.finish("0123456789 and the rest")
    assert card.calls[-1] == ("end", "0123456789")
    assert card.sender.sent == [("answer-0", "(continued)\n\nand the rest")]
    assert card.settled == 0  # the card ended normally


async def test_fail_ends_the_card_in_its_failed_state() -> None:
    card = RecordingCard()
    await card.begin()
    await card.update("So far")
    await card.fail("(the agent failed)", "So far")
    await card.fail("again")  # once only
    assert card.calls[-1] == ("fail", "So far\n\n(the agent failed)")
    assert card.sender.sent == []


async def test_fail_on_a_dead_card_tells_the_user_by_message() -> None:
    card = RecordingCard()
    await card.begin()
    card.failures.append(TransientError("card endpoint down"))
    await card.fail("(stopped)")
    assert card.sender.sent == [("answer-0", "(stopped)")]


async def test_a_message_that_failed_midway_resumes_without_repeating() -> None:
    card = RecordingCard(create=False, limit=10)
    card.sender.fail_calls = {2}
    with pytest.raises(TransientError):
        await card.finish("aaaa bbbb\n\ncccc dddd")
    await card.finish("aaaa bbbb\n\ncccc dddd")  # the emitter's retry
    assert card.sender.sent == [("answer-0", "aaaa bbbb"), ("answer-1", "cccc dddd")]


async def test_adopt_continues_a_card_from_an_earlier_process() -> None:
    card = RecordingCard()
    card.adopt("card-7", "Shown before the crash")
    await card.finish("Shown before the crash, and after")
    assert card.calls == [("end", "Shown before the crash, and after")]
    assert card.delivered.card_id == "card-7"
