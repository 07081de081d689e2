"""EditedReplyStream: one message posted at the first text, edited as the answer grows.

The platform is a leaf fake that records posts and edits and refuses on demand; the clock is
injected, so the spacing of capped edits is asserted without sleeping.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

import pytest

from channels.edits import EditedReplyStream
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


class ByteSender:
    """Plain messages, `limit` UTF-8 bytes each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: list[str] = []

    def measure(self, text: str) -> int:
        return len(text.encode())

    async def send(self, message: InboundMessage, text: str, purpose: str) -> None:
        self.sent.append(text)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEdited(EditedReplyStream):
    """Records ("post"|"edit", handle, text); scripted failures are raised before recording."""

    def __init__(
        self,
        *,
        limit: int = 1000,
        max_edits: int | None = None,
        streaming: bool = True,
    ) -> None:
        self.sender = ByteSender(limit)
        self.clock = Clock()
        super().__init__(self.sender, MESSAGE, streaming=streaming, clock=self.clock)
        self.max_edits = max_edits
        self.calls: list[tuple[str, str, str]] = []
        self.failures: deque[ChannelError | None] = deque()

    def _fail_if_scripted(self) -> None:
        if self.failures and (exc := self.failures.popleft()) is not None:
            raise exc

    async def _post(self, text: str) -> str:
        self._fail_if_scripted()
        self.calls.append(("post", "", text))
        return "seq-7"

    async def _edit(self, handle: str, text: str) -> None:
        self._fail_if_scripted()
        self.calls.append(("edit", handle, text))


async def test_posts_at_the_first_text_then_edits_with_the_growing_text() -> None:
    stream = FakeEdited()
    await stream.begin()
    assert stream.delivered.card_id is None  # nothing posted yet
    await stream.update("   ")
    await stream.update("Hello")
    await stream.update("Hello wor")
    await stream.finish("Hello world")
    assert stream.calls == [
        ("post", "", "Hello"),
        ("edit", "seq-7", "Hello wor"),
        ("edit", "seq-7", "Hello world"),
    ]
    assert stream.sender.sent == []
    assert stream.delivered.card_id == "seq-7"
    assert stream.delivered.text == "Hello world"


async def test_an_answer_complete_before_any_update_is_one_post() -> None:
    stream = FakeEdited()
    await stream.begin()
    await stream.finish("All at once")
    assert stream.calls == [("post", "", "All at once")]


async def test_a_final_text_already_shown_is_not_edited_again() -> None:
    stream = FakeEdited()
    await stream.begin()
    await stream.update("Done")
    await stream.finish("Done")
    assert stream.calls == [("post", "", "Done")]


async def test_stream_off_sends_the_answer_as_messages() -> None:
    stream = FakeEdited(streaming=False, limit=10)
    await stream.begin()
    await stream.update("partial")
    await stream.finish("one two three four")
    assert stream.calls == []
    assert "".join(stream.sender.sent).replace(" ", "") == "onetwothreefour"
    assert all(len(chunk.encode()) <= 10 for chunk in stream.sender.sent)


async def test_capped_edits_keep_the_last_for_the_final_text_and_spread_the_rest() -> None:
    stream = FakeEdited(max_edits=3)
    await stream.begin()
    await stream.update("a")  # posted at t=100
    stream.clock.now += 0.5
    await stream.update("ab")  # the first edit waits 1 s after the post
    stream.clock.now += 0.5
    await stream.update("abc")  # t=101: edit 1
    stream.clock.now += 1.5
    await stream.update("abcd")  # the second waits 2 s after the first
    stream.clock.now += 0.5
    await stream.update("abcde")  # t=103: edit 2, the last intermediate one
    stream.clock.now += 60
    await stream.update("abcdef")  # the cap's last edit belongs to the final text
    await stream.finish("abcdefg")
    assert stream.calls == [
        ("post", "", "a"),
        ("edit", "seq-7", "abc"),
        ("edit", "seq-7", "abcde"),
        ("edit", "seq-7", "abcdefg"),
    ]
    assert stream.sender.sent == []


async def test_a_refused_edit_stops_editing_and_the_rest_arrives_once_as_messages() -> None:
    stream = FakeEdited()
    await stream.begin()
    await stream.update("First part.")
    stream.failures.append(PermanentError("edit not enabled"))
    await stream.update("First part. Second")
    await stream.update("First part. Second part.")  # no call: editing stopped
    await stream.finish("First part. Second part.")
    await stream.finish("First part. Second part.")  # a repeated finish sends nothing more
    assert stream.calls == [("post", "", "First part.")]
    assert stream.sender.sent == ["(continued)\n\nSecond part."]
    assert stream.delivered.text == "First part.(continued)\n\nSecond part."


async def test_a_refused_final_edit_sends_the_rest_as_messages() -> None:
    stream = FakeEdited()
    await stream.begin()
    await stream.update("Shown")
    stream.failures.append(PermanentError("edit window exceeded"))
    await stream.finish("Shown and the rest")
    assert stream.calls == [("post", "", "Shown")]
    assert stream.sender.sent == ["(continued)\n\nand the rest"]


async def test_a_refused_post_sends_the_whole_answer_as_messages() -> None:
    stream = FakeEdited()
    await stream.begin()
    stream.failures.append(PermanentError("bot not registered"))
    await stream.update("Hello")
    await stream.finish("Hello there")
    assert stream.calls == []
    assert stream.sender.sent == ["Hello there"]


async def test_a_retryable_failure_is_raised_for_the_emitter_and_editing_goes_on() -> None:
    stream = FakeEdited()
    await stream.begin()
    stream.failures.append(TransientError("timeout"))
    with pytest.raises(TransientError):
        await stream.update("Hello")
    await stream.update("Hello")  # the post is tried again
    stream.failures.append(TransientError("rate"))
    with pytest.raises(TransientError):
        await stream.finish("Hello world")
    await stream.finish("Hello world")
    assert stream.calls == [("post", "", "Hello"), ("edit", "seq-7", "Hello world")]


async def test_a_long_answer_edits_what_one_message_holds_and_sends_the_rest() -> None:
    stream = FakeEdited(limit=24)
    await stream.begin()
    first, second = "é" * 10, "ü" * 10  # 20 bytes each
    await stream.update(first)
    await stream.update(f"{first}\n\n{second[:3]}")
    await stream.finish(f"{first}\n\n{second}")
    shown = [text for _, _, text in stream.calls]
    assert all(len(text.encode()) <= 24 for text in shown + stream.sender.sent)
    assert shown[-1] == first  # the edited message holds what fits, cut between paragraphs
    assert "".join(stream.sender.sent).endswith(second)
    assert stream.sender.sent[0].startswith("(continued)")


async def test_adopted_message_is_finished_by_one_edit_even_with_a_cap() -> None:
    stream = FakeEdited(max_edits=9)
    stream.adopt("seq-3", "Before the crash")
    await stream.update("Before the crash, more")  # the cap's budget is unknown: no edit
    await stream.finish("Before the crash, and after")
    assert stream.calls == [("edit", "seq-3", "Before the crash, and after")]
    assert stream.delivered.card_id == "seq-3"


async def test_failing_before_any_text_posts_the_note() -> None:
    stream = FakeEdited()
    await stream.begin()
    await stream.fail("(stopped)")
    await stream.fail("(stopped)")
    assert stream.calls == [("post", "", "(stopped)")]


async def test_failing_midway_edits_the_note_under_the_partial_text() -> None:
    stream = FakeEdited()
    await stream.begin()
    await stream.update("Half an")
    await stream.fail("(stopped)", partial_text="Half an answer")
    assert stream.calls[-1] == ("edit", "seq-7", "Half an answer\n\n(stopped)")
