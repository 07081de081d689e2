"""The part of an answer that goes out as plain messages after (or instead of) a card."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from channels.splitting import Measure, split_text

CONTINUED = "(continued)"
CARD_INCOMPLETE = "(the card above could not be completed)"


class MessageTail:
    """Chunks still to send, resumable: a retry continues where the last attempt stopped.

    Never the same text twice: what the card showed is left out when the answer continues it;
    when it does not (the card shows something else), the whole answer follows, said so.
    """

    def __init__(self, limit: int, measure: Measure = len) -> None:
        self._limit = limit
        self._measure = measure
        self._chunks: list[str] | None = None
        self.sent = 0
        self.text = ""  # what the messages have shown

    async def send(
        self, card_text: str, answer: str, send_one: Callable[[str, int], Awaitable[None]]
    ) -> None:
        """Send (the rest of) what `card_text` does not show of `answer`; `send_one(chunk, n)`."""
        if self._chunks is None:
            rest = answer
            if card_text and answer.startswith(card_text):
                rest = answer[len(card_text) :].lstrip()
                rest = f"{CONTINUED}\n\n{rest}" if rest else ""
            elif card_text:
                rest = f"{CARD_INCOMPLETE}\n\n{answer}"
            self._chunks = split_text(rest, self._limit, self._measure) if rest else []
        while self._chunks:
            chunk = self._chunks[0]
            await send_one(chunk, self.sent)
            self._chunks.pop(0)
            self.sent += 1
            self.text += chunk
