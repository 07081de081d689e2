"""`ZimProvider.handle_callback`: the signature and its time window, what is handed to the
journal, and what is answered (docs/platforms/zim.md §1)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels.callbacks import Callback, CallbackMalformed, CallbackRejected, Intake
from channels.zim.config import ZimChannelConfig
from channels.zim.convert import callback_signature
from channels.zim.provider import ZimProvider
from tests.sink_support import Journal, no_sink
from tests.test_zim_convert import ROBOT
from tests.test_zim_convert import callback as unsigned

SECRET = "9193cc662a4c0ec135ec71fb57194b38"
NOW = 1_800_000_000


def signed(
    event: str = "bot_msg", *, timestamp: int = NOW, secret: str = SECRET, **fields: Any
) -> Callback:
    # ZIM draws a nonce per callback: another event or body has its own, a retry repeats it
    nonce = hashlib.sha256(repr((event, sorted(fields.items()))).encode()).hexdigest()[:8]
    body = unsigned(event, timestamp=timestamp, nonce=nonce, **fields)
    body["signature"] = callback_signature(secret, str(timestamp), nonce)
    raw = json.dumps(body).encode()
    return Callback(query="", headers={}, body=raw, payload=json.loads(raw))


@pytest.fixture
async def provider() -> AsyncIterator[ZimProvider]:
    config = ZimChannelConfig(
        id="zim-main", app_id=1234567890, server_secret=SECRET, robot_id=ROBOT
    )
    provider = ZimProvider(config, no_sink, wall_clock=lambda: NOW)
    yield provider
    await provider.close()


async def test_a_signed_message_is_journaled_then_answered(provider: ZimProvider) -> None:
    journal = Journal()
    answer = await provider.handle_callback(signed(), journal)
    assert answer.status == 200
    assert answer.intake == Intake(journaled=1)
    [[message]] = journal.batches
    assert (message.text, message.chat_id) == ("hello", "user_1")


async def test_the_same_message_by_both_callbacks_and_retries_is_one_message(
    provider: ZimProvider,
) -> None:
    journal = Journal()
    first = await provider.handle_callback(signed("bot_msg"), journal)
    again = await provider.handle_callback(signed("send_msg"), journal)
    retried = await provider.handle_callback(signed("send_msg"), journal)  # same body, nonce
    assert first.intake == Intake(journaled=1)
    assert again.intake == retried.intake == Intake(duplicates=1)
    assert {m.message_id for batch in journal.batches for m in batch} == {"857639062792568832"}


def tampered() -> Callback:
    """Signed for NOW, sent with a later timestamp."""
    good = signed()
    payload = dict(good.payload, timestamp=NOW + 1)
    return Callback(query="", headers={}, body=json.dumps(payload).encode(), payload=payload)


@pytest.mark.parametrize(
    ("callback", "reason"),
    [
        (signed(secret="wrong"), "signature"),
        (tampered(), "signature"),
        (signed(timestamp=NOW - 601), "timestamp"),
        (signed(timestamp=NOW + 601), "timestamp"),
    ],
)
async def test_bad_signature_and_stale_timestamp_are_rejected_with_nothing_journaled(
    provider: ZimProvider, callback: Callback, reason: str
) -> None:
    journal = Journal()
    with pytest.raises(CallbackRejected) as caught:
        await provider.handle_callback(callback, journal)
    assert caught.value.reason == reason
    assert journal.batches == []


async def test_the_window_holds_both_ways(provider: ZimProvider) -> None:
    journal = Journal()
    for timestamp in (NOW - 600, NOW + 600):
        answer = await provider.handle_callback(signed(timestamp=timestamp), journal)
        assert answer.status == 200
    assert len(journal.batches) == 2


@pytest.mark.parametrize("missing", ["signature", "nonce", "timestamp"])
async def test_an_unsigned_callback_is_rejected(provider: ZimProvider, missing: str) -> None:
    callback = signed()
    del callback.payload[missing]
    with pytest.raises(CallbackRejected):
        await provider.handle_callback(callback, Journal())


async def test_echoes_and_other_conversations_are_answered_2xx_and_counted_ignored(
    provider: ZimProvider,
) -> None:
    journal = Journal()
    for callback in (
        signed("send_msg", source=1, from_user_id=ROBOT, conv_id=""),
        signed("send_msg", conv_type=2, conv_id="group"),
        signed("send_msg", conv_id="user_2"),
    ):
        answer = await provider.handle_callback(callback, journal)
        assert (answer.status, answer.ignored_events, answer.intake) == (200, 1, Intake())
    assert journal.batches == []


async def test_the_pre_send_hook_is_let_through(provider: ZimProvider) -> None:
    answer = await provider.handle_callback(signed("before_send_msg"), Journal())
    assert (answer.status, answer.body) == (200, {"result": 0})


async def test_an_unreadable_signed_message_is_acknowledged(provider: ZimProvider) -> None:
    journal = Journal()
    answer = await provider.handle_callback(signed(msg_id=None), journal)
    assert (answer.status, answer.intake) == (200, Intake())
    assert journal.batches == []


async def test_a_body_that_is_no_object_is_malformed(provider: ZimProvider) -> None:
    with pytest.raises(CallbackMalformed):
        await provider.handle_callback(
            Callback(query="", headers={}, body=b"[]", payload=[]), Journal()
        )


async def test_a_captured_proof_on_another_body_is_refused_and_a_retry_passes_late(
    provider: ZimProvider,
) -> None:
    """ZIM signs the timestamp and nonce, not the message: the proof must not carry another one."""
    journal = Journal()
    genuine = signed("bot_msg")
    assert (await provider.handle_callback(genuine, journal)).intake == Intake(journaled=1)
    forged_payload = {**genuine.payload, "msg_id": "1", "from_user_id": "someone", "msg_body": "x"}
    forged_raw = json.dumps(forged_payload).encode()
    forged = Callback(query="", headers={}, body=forged_raw, payload=forged_payload)
    with pytest.raises(CallbackRejected) as refused:
        await provider.handle_callback(forged, journal)
    assert refused.value.reason == "replayed"
    assert len(journal.batches) == 1
    # ZIM's own retry of the genuine callback, after the window moved past its timestamp
    provider._wall_clock = lambda: NOW + 700
    assert (await provider.handle_callback(genuine, journal)).intake == Intake(duplicates=1)
