"""How many times one answer goes to the database, end to end through the DingTalk emulator.

Every Store call is one short transaction; the count is a budget the per-reply path keeps. The
Store the daemon opened is instrumented in place (its coroutine methods wrapped, its engine's
transaction starts counted), so the same real SQLite store does the work.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from channels.dingtalk.emulator import EmulatorThread
from daemon.app import Daemon
from storage.repository import Store
from tests.dingtalk_support import dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF, Stack, fake_llm_slow, settings_for
from tools.fake_llm import FakeLLM

__all__ = ["dingtalk_emulator", "fake_llm_slow"]

ANSWER = "The quick brown fox jumps over the lazy dog"


class StoreCounter:
    """Counts the Store's calls by name and the transactions its engine begins."""

    def __init__(self, store: Store) -> None:
        self.calls: Counter[str] = Counter()
        self.transactions = 0
        for name, _method in inspect.getmembers(type(store), inspect.iscoroutinefunction):
            if not name.startswith("_"):
                setattr(store, name, self._counted(name, getattr(store, name)))
        event.listen(store.engine.sync_engine, "begin", self._begun)

    def _counted(
        self, name: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted

    def _begun(self, _connection: Any) -> None:
        self.transactions += 1

    def take(self) -> tuple[Counter[str], int]:
        """What was counted since the last take()."""
        counted = (self.calls.copy(), self.transactions)
        self.calls.clear()
        self.transactions = 0
        return counted


async def answer_once(stack: Stack, text: str, replies: int) -> list[dict[str, Any]]:
    """Say `text` and wait until the `replies`-th card is finished and the journal settled."""
    sent = await stack.say(text)

    def done(items: list[dict[str, Any]]) -> bool:
        cards = [i for i in items if i["kind"] == "card"]
        return len(cards) == replies and bool(cards[-1]["done"])

    items = await stack.wait_bot_items(sent.conversation_id, done)
    await stack.idle()
    return [i for i in items if i["kind"] == "card"]


async def test_one_answer_costs_a_fixed_number_of_store_round_trips(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, fake_llm_slow: FakeLLM
) -> None:
    # A long pause between card updates: exactly one intermediate update lands (at the first
    # token), then the final one, so the count does not depend on timing.
    fake_llm_slow.script_reply(ANSWER)
    fake_llm_slow.script_reply(ANSWER)
    settings = settings_for(
        tmp_path, dingtalk_emulator.url, fake_llm_slow, channel={"card_update_interval": 10}
    )
    # retention off: its run at start would land in the count
    daemon_settings = settings.daemon.model_copy(update={"retention_days": 0})
    daemon = Daemon(settings.model_copy(update={"daemon": daemon_settings}), backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, fake_llm_slow)
    try:
        await stack.connected()
        assert stack.daemon.store is not None
        counter = StoreCounter(stack.daemon.store)
        cards = await answer_once(stack, "hello bot", replies=1)
        first_calls, first_transactions = counter.take()
        cards = await answer_once(stack, "and again", replies=2)
        calls, transactions = counter.take()
        assert cards[-1]["text"] == ANSWER
        state = await dingtalk_emulator.card(cards[-1]["id"])
        assert state is not None
        streamed = [u.body for u in state.history if u.kind == "stream"]
        assert [b["isFinalize"] for b in streamed] == [False, True]
    finally:
        await stack.stop()
    # a returning user: the journal (before the ack), the conversation with its history, the
    # card with "replying" and the user's turn, the progress after the update, the answer's turn
    # before the final text (a crash after the user saw it must not answer again), the outcome;
    # 10 before the per-reply path did each thing once
    assert calls == {
        "journal_accept": 1,
        "resolve_user": 1,  # remembered: no transaction
        "conversation_with_history": 1,
        "reply_begun": 1,
        "journal_update": 1,
        "reply_finishing": 1,
        "reply_ended": 1,
    }
    assert transactions == 6
    # the first answer costs two more: the identity is created (then remembered), and the read
    # that finds no conversation is followed by the write that opens one (11 before)
    assert first_calls == calls
    assert first_transactions == transactions + 2
