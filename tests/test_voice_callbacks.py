"""The voice clouds' callbacks: ZEGO AI Agent's sha1 signature over a millisecond timestamp,
Alibaba's verbatim token and ISO 8601 time, and what each body says (docs/platforms/voice.md
§1.4 and §2.5), hostile bodies included."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from channels.callbacks import Callback, CallbackMalformed, CallbackRejected
from channels.voice import aliyun_callbacks as aliyun
from channels.voice import zego
from channels.voice.events import CallEnded, OtherEvent, TurnInterrupted, TurnTranscript
from channels.zego_signing import api_signature, callback_signature

SECRET = "zego-callback-secret"
TOKEN = "aliyun-callback-token-7c1"
NOW = 1_745_502_313.0  # seconds
INSTANCE = "1912124734317838336"


def _sha1(secret: str, timestamp: str, nonce: str) -> str:
    joined = "".join(sorted([secret, timestamp, nonce]))
    return hashlib.sha1(joined.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324


def zego_body(event: str = "ASRResult", data: Any = None, **fields: Any) -> dict[str, Any]:
    """A ZEGO AI Agent callback as the docs show it, signed with SECRET at NOW (ms)."""
    body: dict[str, Any] = {
        "AppId": 1234567,
        "AgentInstanceId": INSTANCE,
        "AgentUserId": "agent_user_1",
        "RoomId": "room_1",
        "Sequence": 1234567890,
        "Data": {"UserId": "user_1", "Round": 650459806, "Text": "你好"} if data is None else data,
        "Event": event,
        "Nonce": "7450395512627324902",
        "Timestamp": int(NOW * 1000),
    }
    body.update(fields)
    body["Signature"] = _sha1(SECRET, str(body["Timestamp"]), str(body["Nonce"]))
    return body


def callback(payload: Any, headers: dict[str, str] | None = None) -> Callback:
    raw = json.dumps(payload).encode()
    return Callback(query="", headers=headers or {}, body=raw, payload=json.loads(raw))


def test_the_documented_vectors_hold() -> None:
    assert callback_signature("secret", "1470820198", "123412") == (
        "5bd59fd62953a8059fb7eaba95720f66d19e4517"
    )
    assert api_signature(
        12345, "4fd24687296dd9f3", "9193cc662a4c0ec135ec71fb57194b38", 1615186943
    ) == ("43e5cfcca828314675f91b001390566a")


# -- ZEGO: the check -----------------------------------------------------------------------------


def test_a_signed_zego_callback_in_time_passes() -> None:
    zego.check_callback(callback(zego_body()), secret=SECRET, now=NOW)
    upper = zego_body()
    upper["Signature"] = upper["Signature"].upper()
    zego.check_callback(callback(upper), secret=SECRET, now=NOW + 299)
    numeric_nonce = zego_body(Nonce=350176)  # signed as its digits
    zego.check_callback(callback(numeric_nonce), secret=SECRET, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"Signature": "0" * 40},
        {"Signature": None},
        {"Nonce": None},
        {"Timestamp": None},
        {"Timestamp": True},
        {"Signature": 12345},
    ],
)
def test_a_wrong_or_missing_zego_signature_is_refused(change: dict[str, Any]) -> None:
    body = zego_body()
    body.update(change)
    with pytest.raises(CallbackRejected) as caught:
        zego.check_callback(callback(body), secret=SECRET, now=NOW)
    assert caught.value.reason == "signature"


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(CallbackRejected, match="signature is wrong"):
        zego.check_callback(callback(zego_body()), secret="other", now=NOW)


@pytest.mark.parametrize("now", [NOW + 301, NOW - 301, NOW + 86_400])
def test_a_zego_callback_out_of_the_window_is_stale(now: float) -> None:
    with pytest.raises(CallbackRejected) as caught:
        zego.check_callback(callback(zego_body()), secret=SECRET, now=now)
    assert caught.value.reason == "stale"


def test_the_timestamp_is_milliseconds_not_seconds() -> None:
    # signed correctly, but in seconds: read as milliseconds it is January 1970
    body = zego_body(Timestamp=int(NOW))
    with pytest.raises(CallbackRejected) as caught:
        zego.check_callback(callback(body), secret=SECRET, now=NOW)
    assert caught.value.reason == "stale"
    zego.check_callback(
        callback(zego_body(Timestamp=int(NOW * 1000) + 999)), secret=SECRET, now=NOW
    )


@pytest.mark.parametrize("stamp", ["1745502313000.5", "-1745502313000", "9" * 400, "١٢٣"])
def test_a_signed_timestamp_that_is_no_number_is_stale(stamp: str) -> None:
    body = zego_body(Timestamp=stamp)
    with pytest.raises(CallbackRejected) as caught:
        zego.check_callback(callback(body), secret=SECRET, now=NOW)
    assert caught.value.reason == "stale"


def test_a_zego_body_that_is_no_object_is_malformed() -> None:
    with pytest.raises(CallbackMalformed):
        zego.check_callback(callback([zego_body()]), secret=SECRET, now=NOW)


def test_lone_surrogates_fail_the_check_instead_of_the_request() -> None:
    body = zego_body(Nonce="\ud800abc")
    body["Signature"] = "0" * 40
    with pytest.raises(CallbackRejected):
        zego.check_callback(callback(body), secret=SECRET, now=NOW)
    signed = zego_body(Nonce="\udfffxyz")
    zego.check_callback(callback(signed), secret=SECRET, now=NOW)


# -- ZEGO: the events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            {"Code": 0, "DeletedTimestamp": 1745502345138, "LatencyData": {"LLMTTFT": 613}},
            "deleted",
        ),
        ({"Code": 1202}, "user left"),
        ({"Code": 1205}, "code 1205"),
        ({"Code": "1203"}, "code 1203"),
        ({}, "ended"),
    ],
)
def test_agent_instance_deleted_ends_the_call(data: dict[str, Any], reason: str) -> None:
    event = zego.parse_event(zego_body("AgentInstanceDeleted", data))
    assert event == CallEnded(INSTANCE, reason)


def test_an_interruption_says_what_was_played() -> None:
    played = {"Round": 650459806, "Reason": 1, "PlayedText": "今天天气很好"}
    assert zego.parse_event(zego_body("Interrupted", played)) == TurnInterrupted(
        INSTANCE, "650459806", "今天天气很好"
    )
    for data in ({"Round": 7, "Reason": 1}, {"Round": "7", "PlayedText": ""}):
        assert zego.parse_event(zego_body("Interrupted", data)) == TurnInterrupted(
            INSTANCE, "7", None
        )


def test_asr_and_llm_results_are_transcripts_url_decoded() -> None:
    assert zego.parse_event(zego_body()) == TurnTranscript(INSTANCE, "650459806", "user", "你好")
    llm = {"Round": 650459806, "Text": "%E5%93%88%E5%96%BD%E5%91%80%EF%BC%8C%E4%BB%8A%E5%A4%A9"}
    assert zego.parse_event(zego_body("LLMResult", llm)) == TurnTranscript(
        INSTANCE, "650459806", "assistant", "哈喽呀，今天"
    )
    plain = {"Round": 1, "Text": "100% sure"}  # not URL-encoded: kept as sent
    assert zego.parse_event(zego_body("LLMResult", plain)) == TurnTranscript(
        INSTANCE, "1", "assistant", "100% sure"
    )


@pytest.mark.parametrize(
    "event", ["AgentInstanceStatus", "AgentSpeakAction", "UserSpeakAction", "Exception", "New"]
)
def test_other_zego_events_are_noted(event: str) -> None:
    assert zego.parse_event(zego_body(event, {"Status": "LISTENING"})) == OtherEvent(
        INSTANCE, event
    )


@pytest.mark.parametrize(
    "body",
    [
        {"Event": "ASRResult", "Data": {}},
        {"AgentInstanceId": "", "Event": "ASRResult"},
        {"AgentInstanceId": 1912124734317838336, "Event": "ASRResult"},
        {"AgentInstanceId": INSTANCE},
        {"AgentInstanceId": INSTANCE, "Event": ["ASRResult"]},
        {"AgentInstanceId": INSTANCE, "Event": "ASRResult", "Data": "Text=hi"},
        {"AgentInstanceId": INSTANCE, "Event": "ASRResult", "Data": {"Round": 1}},
        {"AgentInstanceId": INSTANCE, "Event": "ASRResult", "Data": {"Round": 1, "Text": 5}},
        {"AgentInstanceId": INSTANCE, "Event": "ASRResult", "Data": {"Round": {}, "Text": ""}},
        {"AgentInstanceId": INSTANCE, "Event": "LLMResult", "Data": {"Round": True, "Text": ""}},
        {"AgentInstanceId": INSTANCE, "Event": "LLMResult", "Data": {"Round": 1.5, "Text": ""}},
        {"AgentInstanceId": INSTANCE, "Event": "Interrupted", "Data": {"Text": ""}},
        {"AgentInstanceId": INSTANCE, "Event": "Interrupted", "Data": {"Round": "9" * 400}},
        {
            "AgentInstanceId": INSTANCE,
            "Event": "Interrupted",
            "Data": {"Round": 1, "PlayedText": []},
        },
        {"AgentInstanceId": INSTANCE, "Event": "AgentInstanceDeleted", "Data": {"Code": "x"}},
    ],
)
def test_hostile_zego_bodies_are_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(CallbackMalformed):
        zego.parse_event(body)


def test_deep_nesting_and_surrogates_in_zego_bodies() -> None:
    deep: Any = "bottom"
    for _ in range(50_000):
        deep = {"MetaInfo": deep}
    assert zego.parse_event(zego_body("AgentInstanceMetaInfo", {"Round": 1, "MetaInfo": deep})) == (
        OtherEvent(INSTANCE, "AgentInstanceMetaInfo")
    )
    event = zego.parse_event(zego_body("ASRResult", {"Round": 3, "Text": "a\ud800b\x00c"}))
    assert event == TurnTranscript(INSTANCE, "3", "user", "a\ufffdbc")
    event = zego.parse_event(zego_body("Weird\udc00", {}, AgentInstanceId="i\ud83d"))
    assert isinstance(event, OtherEvent)
    assert event.name == "Weird\ufffd" and event.instance_id.startswith("i\ufffd")


# -- Alibaba: the check --------------------------------------------------------------------------


def aliyun_body(event: str = "chat_record", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "aiAgentId": "agent-abc",
        "instanceId": "inst-1",
        "event": event,
        "code": 0,
        "message": "",
        "timestamp": "2025-04-24T13:45:13Z",
        "userData": '{"call":"c1"}',
        "extendData": {"channelId": "chan-1", "sentenceId": 3},
    }
    body.update(fields)
    return body


ALIYUN_NOW = 1_745_502_313.0  # 2025-04-24T13:45:13Z


def test_the_right_token_in_time_passes() -> None:
    headers = {"authorization": TOKEN}
    aliyun.check_callback(callback(aliyun_body(), headers), token=TOKEN, now=ALIYUN_NOW)
    aliyun.check_callback(callback(aliyun_body(), headers), token=TOKEN, now=ALIYUN_NOW + 600)
    east = aliyun_body(timestamp="2025-04-24T21:45:13+08:00")  # the same instant
    aliyun.check_callback(callback(east, headers), token=TOKEN, now=ALIYUN_NOW)


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": ""}, {"authorization": "other"}, {"authorization": f"Bearer {TOKEN}"}],
)
def test_a_missing_or_wrong_token_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(CallbackRejected) as caught:
        aliyun.check_callback(callback(aliyun_body(), headers), token=TOKEN, now=ALIYUN_NOW)
    assert caught.value.reason == "key"


def test_an_empty_configured_token_accepts_nothing() -> None:
    with pytest.raises(CallbackRejected):
        aliyun.check_callback(
            callback(aliyun_body(), {"authorization": ""}), token="", now=ALIYUN_NOW
        )


@pytest.mark.parametrize("now", [ALIYUN_NOW + 601, ALIYUN_NOW - 601])
def test_an_aliyun_callback_out_of_the_window_is_stale(now: float) -> None:
    with pytest.raises(CallbackRejected) as caught:
        aliyun.check_callback(
            callback(aliyun_body(), {"authorization": TOKEN}), token=TOKEN, now=now
        )
    assert caught.value.reason == "stale"


@pytest.mark.parametrize("stamp", [None, 1745502313, "yesterday", "2025-04-24T13:45:13", "9" * 100])
def test_a_time_that_cannot_be_placed_is_not_checked(stamp: Any) -> None:
    body = aliyun_body(timestamp=stamp)
    aliyun.check_callback(
        callback(body, {"authorization": TOKEN}), token=TOKEN, now=ALIYUN_NOW + 86_400
    )


def test_the_token_is_checked_before_the_body_is_looked_at() -> None:
    with pytest.raises(CallbackRejected) as caught:
        aliyun.check_callback(callback("not an object"), token=TOKEN, now=ALIYUN_NOW)
    assert caught.value.reason == "key"
    aliyun.check_callback(callback([1], {"authorization": TOKEN}), token=TOKEN, now=ALIYUN_NOW)


# -- Alibaba: the events -------------------------------------------------------------------------


def test_agent_stop_ends_the_call() -> None:
    assert aliyun.parse_event(aliyun_body("agent_stop")) == [CallEnded("inst-1", "stopped")]
    assert aliyun.parse_event(aliyun_body("agent_stop", code=1001)) == [
        CallEnded("inst-1", "code 1001")
    ]


def test_a_chat_record_gives_one_transcript_per_sentence() -> None:
    data = {
        "requestId": "r",
        "code": 0,
        "dialogues": [
            {"roundId": 3, "producer": "user", "text": "hello", "source": "call"},
            {"roundId": "3", "producer": "agent", "text": "hi there", "source": "call"},
            {"roundId": 4, "producer": "system", "text": "ignored"},
            "not an item",
        ],
    }
    expected = [
        TurnTranscript("inst-1", "3", "user", "hello"),
        TurnTranscript("inst-1", "3", "assistant", "hi there"),
    ]
    assert aliyun.parse_event(aliyun_body(data=data)) == expected
    assert aliyun.parse_event(aliyun_body(data=json.dumps(data))) == expected  # a JSON string


def test_a_flat_chat_record_takes_its_sentence_id() -> None:
    flat = {"role": "assistant", "text": "ok", "sentenceId": 12}
    assert aliyun.parse_event(aliyun_body(data=flat)) == [
        TurnTranscript("inst-1", "12", "assistant", "ok")
    ]
    no_id = {"role": "user", "text": "from extendData"}
    assert aliyun.parse_event(aliyun_body(data=no_id)) == [
        TurnTranscript("inst-1", "3", "user", "from extendData")
    ]


@pytest.mark.parametrize(
    "data", [None, "{not json", [], {"dialogues": "x"}, {"dialogues": [{"producer": "user"}]}]
)
def test_an_unrecognised_chat_record_is_noted(data: Any) -> None:
    body = aliyun_body(data=data, extendData=None)
    assert aliyun.parse_event(body) == [OtherEvent("inst-1", "chat_record")]


@pytest.mark.parametrize("event", ["agent_start", "session_start", "error", "audio_record"])
def test_other_aliyun_events_are_noted(event: str) -> None:
    assert aliyun.parse_event(aliyun_body(event)) == [OtherEvent("inst-1", event)]


@pytest.mark.parametrize(
    "body",
    [
        {"event": "agent_stop"},
        {"instanceId": "", "event": "agent_stop"},
        {"instanceId": 42, "event": "agent_stop"},
        {"instanceId": "inst-1"},
        {"instanceId": "inst-1", "event": {"name": "agent_stop"}},
        ["inst-1", "agent_stop"],
    ],
)
def test_hostile_aliyun_bodies_are_malformed(body: Any) -> None:
    with pytest.raises(CallbackMalformed):
        aliyun.parse_event(body)


def test_deep_nesting_and_surrogates_in_aliyun_bodies() -> None:
    deep_json = "[" * 100_000 + "]" * 100_000  # json.loads gives up on it
    assert aliyun.parse_event(aliyun_body(data=deep_json, extendData=None)) == [
        OtherEvent("inst-1", "chat_record")
    ]
    deep: Any = {}
    for _ in range(50_000):
        deep = {"dialogues": [deep]}
    assert aliyun.parse_event(aliyun_body(data=deep, extendData=None)) == [
        OtherEvent("inst-1", "chat_record")
    ]
    data = {"dialogues": [{"roundId": "7\ud800", "producer": "user", "text": "x\udfffy"}]}
    (event,) = aliyun.parse_event(aliyun_body(data=data, instanceId="inst\udc00"))
    assert isinstance(event, TurnTranscript) and event.text == "x\ufffdy"
    assert event.instance_id.startswith("inst\ufffd") and event.round.startswith("7\ufffd")
