"""`WuKongIMProvider.handle_callback`: the key check, the event, the body's shape, and what is
handed to the journal (docs/platforms/wukongim.md §1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from channels.callbacks import Callback, CallbackMalformed, CallbackRejected, Intake
from channels.wukongim.config import WuKongIMChannelConfig
from channels.wukongim.provider import WuKongIMProvider
from tests.sink_support import Journal, journaled_despite_cancel, no_sink
from tests.test_wukongim_convert import BOT, group_item, item

KEY = "k3y-0f-the-webhook_0123456789"


def callback(body: Any, query: str) -> Callback:
    raw = json.dumps(body).encode()
    return Callback(query=query, headers={}, body=raw, payload=json.loads(raw))


@pytest.fixture
async def provider() -> AsyncIterator[WuKongIMProvider]:
    config = WuKongIMChannelConfig(id="wk-main", bot_uid=BOT, webhook_key=SecretStr(KEY))
    provider = WuKongIMProvider(config, no_sink)
    yield provider
    await provider.close()


@pytest.fixture
async def open_provider() -> AsyncIterator[WuKongIMProvider]:
    provider = WuKongIMProvider(WuKongIMChannelConfig(id="wk-open", bot_uid=BOT), no_sink)
    yield provider
    await provider.close()


@pytest.mark.parametrize(
    "query",
    [f"key={KEY}?event=msg.notify", f"key={KEY}&event=msg.notify", f"event=msg.notify&key={KEY}"],
    ids=["v2.2.5", "newer", "key-last"],
)
async def test_the_right_key_is_accepted_however_the_server_built_the_url(
    provider: WuKongIMProvider, query: str
) -> None:
    journal = Journal()
    answer = await provider.handle_callback(callback([item("hi")], query), journal)
    assert answer.status == 200 and answer.body is None
    assert answer.intake == Intake(journaled=1)
    assert [[m.text for m in batch] for batch in journal.batches] == [["hi"]]


@pytest.mark.parametrize(
    "query",
    [
        "event=msg.notify",
        "key=?event=msg.notify",
        f"key={KEY[:-1]}?event=msg.notify",
        f"key={KEY}x?event=msg.notify",
        f"KEY={KEY}?event=msg.notify",
        f"key=wrong&key={KEY}&event=msg.notify",
    ],
    ids=["missing", "empty", "short", "long", "other-name", "wrong-first"],
)
async def test_a_missing_or_wrong_key_is_rejected_before_anything_is_read(
    provider: WuKongIMProvider, query: str
) -> None:
    journal = Journal()
    with pytest.raises(CallbackRejected) as caught:
        await provider.handle_callback(callback("not even an array", query), journal)
    assert caught.value.reason == "key"
    assert KEY not in str(caught.value)
    assert journal.batches == []


async def test_without_a_configured_key_any_key_is_let_through(
    open_provider: WuKongIMProvider,
) -> None:
    journal = Journal()
    answer = await open_provider.handle_callback(
        callback([item()], "key=whatever?event=msg.notify"), journal
    )
    assert answer.intake.journaled == 1


@pytest.mark.parametrize("event", ["msg.offline", "user.onlinestatus", "msg.stream"])
async def test_other_events_are_acknowledged_and_ignored(
    open_provider: WuKongIMProvider, event: str
) -> None:
    journal = Journal()
    body: Any = ["u1-1-1-9-1-1"] if event == "user.onlinestatus" else {**item(), "to_uids": ["u"]}
    answer = await open_provider.handle_callback(callback(body, f"event={event}"), journal)
    assert (answer.status, answer.ignored_events, answer.intake) == (200, 1, Intake())
    assert journal.batches == []


async def test_a_callback_without_an_event_is_malformed(open_provider: WuKongIMProvider) -> None:
    with pytest.raises(CallbackMalformed):
        await open_provider.handle_callback(callback([item()], ""), Journal())


@pytest.mark.parametrize("body", [{"message_id": 1}, "text", 5, None])
async def test_a_msg_notify_body_that_is_no_array_is_malformed(
    open_provider: WuKongIMProvider, body: Any
) -> None:
    journal = Journal()
    with pytest.raises(CallbackMalformed):
        await open_provider.handle_callback(callback(body, "event=msg.notify"), journal)
    assert journal.batches == []


async def test_a_batch_is_journaled_whole_with_echoes_and_unreadable_items_left_out(
    open_provider: WuKongIMProvider,
) -> None:
    journal = Journal()
    body = [
        item("from u1", message_idstr="1", from_uid="u1"),
        item("echo", message_idstr="2", from_uid=BOT, channel_id="u1"),
        item("from u2", message_idstr="3", from_uid="u2"),
        {"payload": 7},
        group_item("@aibot from u3", {"uids": [BOT]}, message_idstr="4", from_uid="u3"),
    ]
    answer = await open_provider.handle_callback(callback(body, "event=msg.notify"), journal)
    assert len(journal.batches) == 1
    assert [m.message_id for m in journal.batches[0]] == ["1", "3", "4"]
    assert answer.intake == Intake(journaled=3)
    assert answer.ignored_events == 2  # the echo and the unreadable item


@pytest.mark.parametrize(
    "body",
    [[], [item(from_uid=BOT)], [item(from_uid="")], [item(channel_id="u9")]],
    ids=["empty", "echo", "system", "between-users"],
)
async def test_nothing_reaches_the_journal_when_nothing_is_for_the_bot(
    open_provider: WuKongIMProvider, body: list[Any]
) -> None:
    journal = Journal()
    answer = await open_provider.handle_callback(callback(body, "event=msg.notify"), journal)
    assert journal.batches == []
    assert (answer.status, answer.intake, answer.ignored_events) == (200, Intake(), len(body))


async def test_a_failed_journal_write_is_not_acknowledged(
    open_provider: WuKongIMProvider,
) -> None:
    journal = Journal()
    journal.failure = RuntimeError("database is locked")
    with pytest.raises(RuntimeError, match="locked"):
        await open_provider.handle_callback(callback([item()], "event=msg.notify"), journal)


async def test_a_cancelled_request_does_not_cut_the_journal_write_short(
    open_provider: WuKongIMProvider,
) -> None:
    written = await journaled_despite_cancel(open_provider, callback([item()], "event=msg.notify"))
    assert written == [item()["message_idstr"]]


@pytest.mark.parametrize(
    "key", ["short", "has space in it!!", "has?question=mark&and", "ключ-ключ-ключ-ключ"]
)
def test_a_webhook_key_must_be_safe_in_a_url(key: str) -> None:
    with pytest.raises(ValidationError, match="webhook URL"):
        WuKongIMChannelConfig(id="wk", bot_uid=BOT, webhook_key=SecretStr(key))


@pytest.mark.parametrize("bot_uid", ["", "a@b", "a#b", "a&b", "a b"])
def test_a_bot_uid_must_be_a_usable_channel_id(bot_uid: str) -> None:
    with pytest.raises(ValidationError):
        WuKongIMChannelConfig(id="wk", bot_uid=bot_uid)


def test_an_empty_token_is_refused_and_none_means_no_token() -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        WuKongIMChannelConfig(id="wk", bot_uid=BOT, token=SecretStr(""))
    config = WuKongIMChannelConfig(id="wk", bot_uid=BOT)
    assert config.token is None and config.webhook_key is None
    assert (config.stream, config.max_message_chars) == ("event", 4000)
