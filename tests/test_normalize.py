"""The inbound normalisation rule (channels/normalize.py) and the storage error classifier."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError, OperationalError

from channels import normalize
from channels.model import (
    Attachment,
    ChannelId,
    ChatType,
    InboundMessage,
    Sender,
    inbound_from_json,
    inbound_to_json,
)
from storage.errors import describe, unstorable
from storage.models import Conversation, InboundJournal, PlatformIdentity, UserAccount

# What hypothesis's default text strategy never or rarely produces: lone surrogates, C0
# controls, format characters (RTL marks, zero-width joiners, BOM), next to ordinary letters.
hostile_chars = st.characters(categories=["Cs", "Cc", "Cf", "L", "N", "P", "Zs", "So"])
hostile_text = st.one_of(
    st.text(hostile_chars, max_size=40),
    st.sampled_from(
        ["\udcff", "\x00", "a\x00b", "\u202eevil", "\ud83d\ude00", "\ud83d", "\x1b[2J"]
    ),
    st.integers(min_value=240, max_value=400).map(lambda n: "i" * n),
)


def message(**fields: object) -> InboundMessage:
    base = InboundMessage(
        channel_id=ChannelId("c"),
        platform="dingtalk",
        message_id="m1",
        chat_id="chat",
        chat_type=ChatType.DIRECT,
        sender=Sender("u1", "Alice"),
        text="hello",
        received_at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    return replace(base, **fields)  # type: ignore[arg-type]  # test values of every field


def storable(value: str) -> bool:
    """What both backends accept in a text column: UTF-8 encodable, no NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def test_clean_replaces_lone_surrogates_and_removes_controls_but_keeps_layout() -> None:
    assert normalize.clean("a\udcffb") == "a\ufffdb"
    assert normalize.clean("\ud83d\ude00") == "\U0001f600"  # a pair is joined, not replaced
    assert normalize.clean("\ude00\ud83d") == "\ufffd\ufffd"  # halves in the wrong order
    assert normalize.clean("a\x00b\x1b[31mc\x7f") == "ab[31mc\x7f"
    assert normalize.clean("line\tone\r\nline two\n") == "line\tone\r\nline two\n"
    assert normalize.clean("\u202eright to left\u200f") == "\u202eright to left\u200f"
    ordinary = "你好, world"
    assert normalize.clean(ordinary) is ordinary


def test_a_long_or_changed_id_keeps_a_prefix_and_a_hash_of_the_original() -> None:
    ordinary = "msgXYZ=="
    assert normalize.platform_id(ordinary) is ordinary
    long_id = "m" * 300
    shortened = normalize.platform_id(long_id)
    digest = hashlib.sha256(long_id.encode()).hexdigest()[:16]
    assert shortened == "m" * (normalize.MAX_ID_CHARS - 17) + "~" + digest
    assert len(shortened) == normalize.MAX_ID_CHARS
    # distinct ids stay distinct, the same id maps to the same value (a redelivery dedupes)
    assert normalize.platform_id("m" * 299 + "n") != shortened
    assert normalize.platform_id("m" * 300) == shortened
    # an id that had to be cleaned cannot merge with the clean id it resembles
    assert normalize.platform_id("a\x00b") != normalize.platform_id("ab") == "ab"
    assert normalize.platform_id("a\udcffb").startswith("a\ufffdb~")


def test_names_and_text_are_bounded() -> None:
    assert normalize.name("n" * 300) == "n" * normalize.MAX_NAME_CHARS
    assert normalize.name("Al\x00ice") == "Alice"
    long_text = "x" * (normalize.MAX_TEXT_CHARS + 10)
    cut = normalize.text(long_text)
    assert len(cut) == normalize.MAX_TEXT_CHARS
    assert cut.endswith(f"longer than {normalize.MAX_TEXT_CHARS} characters.]")
    assert cut.startswith("x" * 1000)
    exact = "y" * normalize.MAX_TEXT_CHARS
    assert normalize.text(exact) is exact


def test_the_bounds_fit_every_column_an_inbound_value_lands_in() -> None:
    def length(column: sa.Column[str]) -> int:
        assert isinstance(column.type, sa.String) and column.type.length is not None
        return column.type.length

    journal = InboundJournal.__table__.c  # type: ignore[attr-defined]  # SQLModel table
    identity = PlatformIdentity.__table__.c  # type: ignore[attr-defined]
    for id_column in (
        journal.platform_message_id,
        journal.frame_id,
        identity.platform_user_id,
        identity.tenant,
    ):
        assert length(id_column) >= normalize.MAX_ID_CHARS, id_column
    for name_column in (UserAccount.__table__.c.display_name, identity.display_name):  # type: ignore[attr-defined]
        assert length(name_column) >= normalize.MAX_NAME_CHARS, name_column
    # the longest conversation key: "group:<chat id>:<sender id>"
    key = length(Conversation.__table__.c.key)  # type: ignore[attr-defined]
    assert len("group::") + 2 * normalize.MAX_ID_CHARS <= key


def test_an_inbound_message_is_normalised_however_it_is_built() -> None:
    built = message(
        message_id="m" * 300,
        chat_id="c\x00",
        frame_id="f\udcff",
        tenant="t" * 260,
        sender=Sender("u" * 300, "Bo\x00b" + "b" * 300, {"staff_id": "s\x00"}),
        text="hi \udcff there\x00",
        attachments=(Attachment("file", name="a\x00.pdf", handle="h\udcff"),),
        reply_handle={"session_webhook": "http://x/\udcff", "nested": {"k\x00": ["v\x00"]}, "n": 1},
    )
    assert built.text == "hi \ufffd there"
    assert len(built.message_id) == len(built.tenant) == normalize.MAX_ID_CHARS
    assert built.chat_id.startswith("c~") and built.frame_id.startswith("f\ufffd~")
    assert len(built.sender.platform_id) == normalize.MAX_ID_CHARS
    assert built.sender.display_name == ("Bob" + "b" * 300)[: normalize.MAX_NAME_CHARS]
    assert built.sender.extra_ids["staff_id"].startswith("s~")
    assert built.attachments[0] == Attachment("file", name="a.pdf", handle="h\ufffd")
    assert built.reply_handle == {
        "session_webhook": "http://x/\ufffd",
        "nested": {"k": ["v"]},
        "n": 1,
    }
    # what the journal keeps comes back as the very same message
    assert inbound_from_json(inbound_to_json(built)) == built
    assert replace(built) == built


@settings(max_examples=150, derandomize=True, database=None)
@given(
    ids=st.lists(hostile_text, min_size=5, max_size=5),
    name=hostile_text,
    text=hostile_text,
    handle=st.dictionaries(hostile_text, hostile_text, max_size=3),
)
def test_any_hostile_value_becomes_storable_and_stays_put(
    ids: list[str], name: str, text: str, handle: dict[str, str]
) -> None:
    built = message(
        message_id=ids[0],
        chat_id=ids[1],
        frame_id=ids[2],
        tenant=ids[3],
        sender=Sender(ids[4], name),
        text=text,
        reply_handle=handle,
    )
    for value in (built.message_id, built.chat_id, built.frame_id, built.tenant):
        assert storable(value) and len(value) <= normalize.MAX_ID_CHARS
    assert storable(built.sender.platform_id) and storable(built.sender.display_name)
    assert len(built.sender.display_name) <= normalize.MAX_NAME_CHARS
    assert storable(built.text) and storable(inbound_to_json(built))
    assert inbound_from_json(inbound_to_json(built)) == built  # idempotent, whatever the input


def test_the_classifier_reads_the_class_never_the_message() -> None:
    class DriverError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__("invalid input for query argument $5: 'secret text'")
            self.sqlstate = sqlstate

    def wrapped(orig: BaseException) -> DBAPIError:
        return DBAPIError("INSERT ...", {"text": "secret text"}, orig)

    encoding = UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")
    assert unstorable(encoding)
    assert unstorable(wrapped(DriverError("22001")))  # string too long
    assert unstorable(wrapped(DriverError("22021")))  # NUL: character not in repertoire
    assert not unstorable(wrapped(DriverError("08006")))  # connection failure
    assert not unstorable(wrapped(DriverError("40001")))  # serialization failure
    locked = OperationalError("INSERT ...", {}, Exception("database is locked"))
    assert not unstorable(locked)
    assert not unstorable(TimeoutError())
    assert not unstorable(ConnectionRefusedError())
    # logs name the class and SQLSTATE; a data error's own message (which quotes values) is left out
    assert describe(wrapped(DriverError("22001"))) == "DriverError (SQLSTATE 22001)"
    # and never the statement or its parameters, which SQLAlchemy's own message quotes
    assert "INSERT" in str(locked)
    assert describe(locked) == "Exception: database is locked"
