"""`EasemobProvider.handle_callback`: `security`, the time window, the two callbacks, the
pre-send verdict, and what is handed to the journal (docs/platforms/easemob.md §1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from channels.callbacks import Callback, CallbackMalformed, CallbackRejected, Intake
from channels.easemob.config import EasemobChannelConfig
from channels.easemob.convert import security
from channels.easemob.provider import EasemobProvider
from channels.observer import NullObserver
from tests.sink_support import Journal, journaled_despite_cancel, no_sink
from tests.test_easemob_convert import BOT, post_send, pre_send

SECRET = "callback-rule-secret"
NOW = 1_700_000_000.0  # the provider's wall clock, seconds


class Invalid(NullObserver):
    def __init__(self) -> None:
        self.invalid = 0

    def message_invalid(self, channel_id: str, platform: str) -> None:
        self.invalid += 1


def config(**fields: Any) -> EasemobChannelConfig:
    base: dict[str, Any] = {
        "id": "em-main",
        "org_name": "org",
        "app_name": "app",
        "client_id": "YXA6client",
        "client_secret": SecretStr("YXA6secret"),
        "callback_secret": SecretStr(SECRET),
        "bot_user": BOT,
    }
    return EasemobChannelConfig(**{**base, **fields})


def signed(body: dict[str, Any], secret: str = SECRET, at: float = NOW) -> dict[str, Any]:
    """`body` stamped `at` (seconds) and signed with `secret` as Easemob signs."""
    stamp = int(at * 1000)
    return {**body, "timestamp": stamp, "security": security(body["callId"], secret, str(stamp))}


def callback(body: Any) -> Callback:
    raw = json.dumps(body).encode()
    return Callback(query="", headers={}, body=raw, payload=json.loads(raw))


@pytest.fixture
def observer() -> Invalid:
    return Invalid()


@pytest.fixture
async def provider(observer: Invalid) -> AsyncIterator[EasemobProvider]:
    provider = EasemobProvider(config(), no_sink, observer=observer, wall_clock=lambda: NOW)
    yield provider
    await provider.close()


async def test_a_pre_send_callback_is_journaled_then_let_through(
    provider: EasemobProvider,
) -> None:
    journal = Journal()
    answer = await provider.handle_callback(callback(signed(pre_send("hi"))), journal)
    assert (answer.status, answer.body) == (200, {"valid": True})
    assert answer.intake == Intake(journaled=1)
    assert [[m.text for m in batch] for batch in journal.batches] == [["hi"]]


async def test_a_post_send_callback_is_journaled_and_answered_with_an_empty_200(
    provider: EasemobProvider,
) -> None:
    journal = Journal()
    answer = await provider.handle_callback(callback(signed(post_send("hi"))), journal)
    assert (answer.status, answer.body, answer.intake) == (200, None, Intake(journaled=1))


async def test_a_message_that_came_by_both_callbacks_is_journaled_once(
    provider: EasemobProvider,
) -> None:
    journal = Journal()
    first = await provider.handle_callback(callback(signed(pre_send())), journal)
    again = await provider.handle_callback(callback(signed(post_send())), journal)
    retried = await provider.handle_callback(callback(signed(post_send())), journal)
    assert first.intake == Intake(journaled=1)
    assert again.intake == retried.intake == Intake(duplicates=1)
    assert len(journal.seen) == 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: {**b, "security": "0" * 32},
        lambda b: {**b, "security": b["security"][:-1]},
        lambda b: {**b, "security": ""},
        lambda b: {**b, "security": "é" * 32},
        lambda b: {**b, "from": "u2"} | {"callId": b["callId"] + "x"},
        lambda b: {**b, "timestamp": b["timestamp"] + 1},
        lambda b: {k: v for k, v in b.items() if k != "security"},
        lambda b: {k: v for k, v in b.items() if k != "callId"},
    ],
    ids=["zeros", "short", "empty", "non-ascii", "other-call", "other-time", "none", "no-call-id"],
)
async def test_a_bad_security_is_rejected_with_nothing_journaled(
    provider: EasemobProvider, tamper: Any
) -> None:
    journal = Journal()
    with pytest.raises(CallbackRejected) as caught:
        await provider.handle_callback(callback(tamper(signed(pre_send()))), journal)
    assert caught.value.reason == "signature"
    assert SECRET not in str(caught.value)
    assert journal.batches == []


async def test_a_callback_signed_with_another_secret_is_rejected(
    provider: EasemobProvider,
) -> None:
    with pytest.raises(CallbackRejected, match="security"):
        await provider.handle_callback(callback(signed(pre_send(), "other")), Journal())


@pytest.mark.parametrize("offset", [-601.0, 601.0, -86_400.0, 1e9])
async def test_a_timestamp_outside_ten_minutes_either_way_is_rejected(
    provider: EasemobProvider, offset: float
) -> None:
    journal = Journal()
    with pytest.raises(CallbackRejected) as caught:
        await provider.handle_callback(callback(signed(post_send(), at=NOW + offset)), journal)
    assert caught.value.reason == "timestamp"
    assert journal.batches == []


@pytest.mark.parametrize("offset", [-599.0, 599.0, 0.0])
async def test_a_timestamp_within_ten_minutes_is_accepted(
    provider: EasemobProvider, offset: float
) -> None:
    answer = await provider.handle_callback(
        callback(signed(post_send(), at=NOW + offset)), Journal()
    )
    assert answer.intake.journaled == 1


@pytest.mark.parametrize(
    "fields",
    [{"from": "u1", "to": "u2"}, {"chat_type": "groupchat", "to": "169"}],
    ids=["between-users", "group"],
)
async def test_a_pre_send_callback_not_for_the_bot_is_let_through_and_nothing_else(
    provider: EasemobProvider, fields: dict[str, Any]
) -> None:
    journal = Journal()
    answer = await provider.handle_callback(callback(signed(pre_send(**fields))), journal)
    assert (answer.status, answer.body, answer.ignored_events) == (200, {"valid": True}, 1)
    assert journal.batches == []


@pytest.mark.parametrize(
    "fields",
    [
        {"from": BOT, "to": "u1"},
        {"from": "u1", "to": "u2"},
        {"chat_type": "edit"},
        {"eventType": "chat_offline"},
        {"eventType": "recall"},
    ],
    ids=["echo", "between-users", "edit", "offline", "other-event"],
)
async def test_an_ignored_post_send_callback_still_gets_200(
    provider: EasemobProvider, fields: dict[str, Any]
) -> None:
    journal = Journal()
    answer = await provider.handle_callback(callback(signed(post_send(**fields))), journal)
    assert (answer.status, answer.body, answer.ignored_events) == (200, None, 1)
    assert journal.batches == []


@pytest.mark.parametrize("make", [pre_send, post_send], ids=["pre-send", "post-send"])
async def test_an_unreadable_message_is_acknowledged_and_counted_invalid(
    provider: EasemobProvider, observer: Invalid, make: Any
) -> None:
    journal = Journal()
    body = signed(make(msg_id=None))
    answer = await provider.handle_callback(callback(body), journal)
    assert answer.status == 200 and answer.ignored_events == 0
    assert answer.body == ({"valid": True} if make is pre_send else None)
    assert observer.invalid == 1 and journal.batches == []


@pytest.mark.parametrize("body", [[pre_send()], "text", 5, None])
async def test_a_body_that_is_no_object_is_malformed(provider: EasemobProvider, body: Any) -> None:
    with pytest.raises(CallbackMalformed):
        await provider.handle_callback(callback(body), Journal())


async def test_a_failed_journal_write_is_not_acknowledged(provider: EasemobProvider) -> None:
    journal = Journal()
    journal.failure = RuntimeError("database is locked")
    with pytest.raises(RuntimeError, match="locked"):
        await provider.handle_callback(callback(signed(pre_send())), journal)


async def test_a_cancelled_request_does_not_cut_the_journal_write_short(
    provider: EasemobProvider,
) -> None:
    written = await journaled_despite_cancel(provider, callback(signed(pre_send())))
    assert written == [pre_send()["msg_id"]]


@pytest.mark.parametrize(
    "fields",
    [
        {"bot_user": "AiBot"},
        {"bot_user": "a b"},
        {"bot_user": ""},
        {"org_name": "o/g"},
        {"client_secret": SecretStr("")},
        {"callback_secret": SecretStr("")},
        {"max_message_bytes": 5001},
        {"stream": "event"},
        {"api_base": "ftp://a1.easemob.com"},
    ],
)
def test_settings_that_cannot_work_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**fields)


def test_the_defaults() -> None:
    settings = config()
    assert (settings.api_base, settings.stream, settings.max_message_bytes) == (
        "https://a1.easemob.com",
        "off",
        5000,
    )


async def test_a_captured_proof_on_another_body_is_refused_and_a_retry_passes_late(
    provider: EasemobProvider,
) -> None:
    """Easemob signs the callId and timestamp, not the message: the proof carries no other one."""
    journal = Journal()
    genuine = signed(pre_send("hi"))
    assert (await provider.handle_callback(callback(genuine), journal)).intake == Intake(
        journaled=1
    )
    forged = {**genuine, "msg_id": "1", "from": "someone", "payload": {"msg": "x", "type": "txt"}}
    with pytest.raises(CallbackRejected) as refused:
        await provider.handle_callback(callback(forged), journal)
    assert refused.value.reason == "replayed"
    assert len(journal.batches) == 1
    provider._wall_clock = lambda: NOW + 700
    late = await provider.handle_callback(callback(genuine), journal)
    assert late.intake == Intake(duplicates=1)
