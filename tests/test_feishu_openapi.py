"""The Feishu emulator's OpenAPI with a plain HTTP client: tokens, messages, CardKit, faults."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from channels.feishu.emulator import FeishuEmulator, FeishuEmulatorThread
from tests import feishu_support
from tests.feishu_support import (
    CARDS,
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    MESSAGES,
    Api,
    RawFeishuClient,
    api,
    raw,
    streaming_card,
)

feishu_emulator = feishu_support.feishu_emulator  # the shared fixture, by name
ID = FEISHU_APP_ID

__all__ = ["api", "raw"]

# -- OpenAPI ---------------------------------------------------------------------------------------


async def test_tenant_tokens_bot_info_and_expiry(
    feishu_emulator: FeishuEmulatorThread, api: Api
) -> None:
    first = api.token
    status, body = await api.login()
    assert (status, body["code"], body["msg"]) == (200, 0, "ok")
    assert body["tenant_access_token"] == first  # plenty of lifetime left: the same token
    assert 7000 < body["expire"] <= 7200
    status, info = await api.call("GET", "/open-apis/bot/v3/info")
    assert (status, info["code"], info["bot"]["app_name"]) == (200, 0, "Emulated Bot")
    assert info["bot"]["open_id"].startswith("ou_")
    assert await feishu_emulator.expire_tokens() == 1
    status, expired = await api.call("GET", "/open-apis/bot/v3/info")
    assert (status, expired["code"]) == (400, 99991663)
    api.token = ""
    assert (await api.call("GET", "/open-apis/bot/v3/info"))[1]["code"] == 99991661
    status, wrong = await api.login("wrong")
    assert (status, wrong["code"]) == (400, 10014)
    await api.login()
    assert api.token != first
    calls = await feishu_emulator.calls("/open-apis/bot/v3/info")
    assert [(c.status, c.code, c.app_id) for c in calls] == [
        (200, 0, ID),
        (400, 99991663, ""),
        (400, 99991661, ""),
    ]
    logins = await feishu_emulator.calls("/open-apis/auth/v3/tenant_access_token/internal")
    assert all(c.body["app_secret"] == "***" for c in logins)


async def test_send_reply_and_uuid_dedupe(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="question")
    status, answer = await api.reply(sent.message_id, "text", {"text": "answer"}, uuid="u-1")
    assert (status, answer["code"]) == (200, 0)
    data = answer["data"]
    assert (data["parent_id"], data["chat_id"], data["msg_type"]) == (
        sent.message_id,
        sent.chat_id,
        "text",
    )
    assert data["message_id"].startswith("om_")
    assert data["sender"]["sender_type"] == "app"
    _, again = await api.reply(sent.message_id, "text", {"text": "answer"}, uuid="u-1")
    assert again["data"]["message_id"] == data["message_id"]
    post = {"zh_cn": {"title": "", "content": [[{"tag": "md", "text": "**bold**"}]]}}
    status, posted = await api.send(sent.chat_id, "post", post)
    assert (status, posted["code"]) == (200, 0)
    view = await feishu_emulator.chat_view(sent.chat_id)
    assert view is not None
    assert [(i["kind"], i["msg_type"], i["text"], i["reply_to"]) for i in view["items"]] == [
        ("user", "text", "question", ""),
        ("message", "text", "answer", sent.message_id),
        ("message", "post", "**bold**", ""),
    ]
    assert view["items"][1]["id"] == data["message_id"]
    errors = [
        await api.reply("om_unknown", "text", {"text": "x"}),
        await api.send("oc_unknown", "text", {"text": "x"}),
        await api.send(sent.chat_id, "text", {"text": "x" * (150 * 1024 + 1)}),
        await api.send(sent.chat_id, "post", {"post": post}),
        await api.send(sent.chat_id, "nonsense", {"text": "x"}),
    ]
    assert [(s, b["code"]) for s, b in errors] == [
        (400, 230011),
        (400, 230002),
        (400, 230025),
        (400, 230001),
        (400, 230001),
    ]


async def test_a_chat_takes_five_messages_per_second(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="flood me")
    codes = [(await api.send(sent.chat_id, "text", {"text": str(i)}))[1]["code"] for i in range(6)]
    assert codes == [0, 0, 0, 0, 0, 230020]


async def test_a_streaming_card_from_create_to_finish(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="stream please")
    status, created = await api.create_card(streaming_card())
    assert (status, created["code"]) == (200, 0)
    card_id = created["data"]["card_id"]
    content = {"type": "card", "data": {"card_id": card_id}}
    status, replied = await api.reply(sent.message_id, "interactive", content)
    assert (status, replied["code"]) == (200, 0)
    assert (await api.stream(card_id, "Hel", 1))[1]["code"] == 0
    assert (await api.stream(card_id, "Hello", 2))[1]["code"] == 0
    status, stale = await api.stream(card_id, "Hello again", 2)
    assert (status, stale["code"]) == (400, 300317)
    view = await feishu_emulator.chat_view(sent.chat_id)
    assert view is not None
    item = view["items"][1]
    assert (item["kind"], item["card_id"], item["reply_to"]) == ("card", card_id, sent.message_id)
    assert (item["status"], item["streaming"], item["text"], item["done"]) == (
        "streaming",
        True,
        "Hello",
        False,
    )
    assert (await api.settings(card_id, {"streaming_mode": False}, 3))[1]["code"] == 0
    status, closed = await api.stream(card_id, "Hello!", 4)
    assert (status, closed["code"]) == (400, 300309)
    status, resent = await api.send(sent.chat_id, "interactive", content)
    assert (status, resent["code"]) == (400, 230099)
    card = await feishu_emulator.card(card_id)
    assert card is not None
    assert (card.status, card.done, card.text, card.sequence) == ("finished", True, "Hello", 3)
    assert card.message_id == replied["data"]["message_id"]
    assert [op.op for op in card.history] == ["create", "send", "content", "content", "settings"]
    assert [c.card_id for c in await feishu_emulator.cards()] == [card_id]


async def test_card_entities_are_validated(feishu_emulator: FeishuEmulatorThread, api: Api) -> None:
    def with_elements(*elements: dict[str, Any]) -> dict[str, Any]:
        return {"schema": "2.0", "body": {"elements": list(elements)}}

    md = {"tag": "markdown", "content": "x", "element_id": "markdown_1"}
    cases = [
        ({"schema": "1.0", "elements": []}, 300303),
        (with_elements({**md, "element_id": "1bad"}), 300304),
        (with_elements(md, md), 300301),
        (with_elements({**md, "content": "x" * 31_000}), 200860),
    ]
    for card, code in cases:
        status, body = await api.create_card(card)
        assert (status, body["code"]) == (400, code), card
    status, body = await api.call("POST", CARDS, {"type": "card_json", "data": "{not json"})
    assert (status, body["code"]) == (400, 200621)
    button = {"tag": "button", "element_id": "button_1", "text": {"tag": "plain_text"}}
    _, created = await api.create_card({**streaming_card(), "body": {"elements": [md, button]}})
    card_id = created["data"]["card_id"]
    for element in ("button_1", "missing_1"):
        path = f"{CARDS}/{card_id}/elements/{element}/content"
        status, body = await api.call("PUT", path, {"content": "x", "sequence": 1})
        assert (status, body["code"]) == (400, 300310)
    assert (await api.stream(card_id, "a", 1, uuid="op-1"))[1]["code"] == 0
    assert (await api.stream(card_id, "a", 1, uuid="op-1"))[1]["code"] == 0  # a retry
    assert (await api.stream(card_id, "b", 2, uuid="op-1"))[1]["code"] == 200770
    assert (await api.stream("7000000000000000000", "a", 3))[1]["code"] == 200740
    card = await feishu_emulator.card(card_id)
    assert card is not None
    assert (card.text, card.sequence, [op.op for op in card.history]) == (
        "a",
        1,
        ["create", "content"],
    )


async def test_a_card_takes_ten_operations_per_second(
    feishu_emulator: FeishuEmulatorThread, api: Api
) -> None:
    _, one = await api.create_card(streaming_card())
    _, other = await api.create_card(streaming_card())
    results = [await api.stream(one["data"]["card_id"], f"t{i}", i + 1) for i in range(11)]
    assert [b["code"] for _, b in results] == [0] * 10 + [99991400]
    assert results[-1][0] == 429
    assert (await api.stream(other["data"]["card_id"], "fine", 1))[1]["code"] == 0


async def test_cardkit_operations_share_an_app_budget() -> None:
    emulator = FeishuEmulator([(ID, FEISHU_APP_SECRET)], app_ops_per_second=3)
    await emulator.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, emulator.url)
            await api.login()
            _, first = await api.create_card(streaming_card())
            _, second = await api.create_card(streaming_card())
            card_ids = [first["data"]["card_id"], second["data"]["card_id"]]
            assert (await api.stream(card_ids[0], "a", 1))[1]["code"] == 0
            status, limited = await api.stream(card_ids[1], "b", 1)
            assert (status, limited["code"]) == (429, 99991400)
    finally:
        await emulator.stop()


async def test_streaming_closes_by_itself_and_can_be_reenabled() -> None:
    emulator = FeishuEmulator([(ID, FEISHU_APP_SECRET)], streaming_timeout=0.2)
    await emulator.start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, emulator.url)
            await api.login()
            _, created = await api.create_card(streaming_card())
            card_id = created["data"]["card_id"]
            assert (await api.stream(card_id, "quick", 1))[1]["code"] == 0

            def timed_out(e: FeishuEmulator) -> bool:
                card = e.card(card_id)
                return card is not None and card.status == "failed"

            await emulator.wait_until(timed_out, 5)
            status, late = await api.stream(card_id, "too late", 2)
            assert (status, late["code"]) == (400, 200850)
            assert (await api.settings(card_id, {"streaming_mode": True}, 2))[1]["code"] == 0
            assert (await api.stream(card_id, "again", 3))[1]["code"] == 0
    finally:
        await emulator.stop()


async def test_openapi_faults_answer_feishu_bodies(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="faults")
    await feishu_emulator.add_fault(f"{MESSAGES}/*/reply", code=230020, msg="slow down")
    await feishu_emulator.add_fault(CARDS, 429, method="POST")
    status, body = await api.reply(sent.message_id, "text", {"text": "x"})
    assert (status, body["code"], body["msg"]) == (400, 230020, "slow down")
    status, body = await api.create_card(streaming_card())
    assert (status, body["code"]) == (429, 99991400)
    assert (await api.reply(sent.message_id, "text", {"text": "x"}))[1]["code"] == 0
    await feishu_emulator.set_latency(0.2)
    timeout = aiohttp.ClientTimeout(total=0.05)
    with pytest.raises(TimeoutError):
        await api.http.get(feishu_emulator.url + "/open-apis/bot/v3/info", timeout=timeout)
    calls = await feishu_emulator.calls(f"{MESSAGES}/{sent.message_id}/reply")
    assert [(c.status, c.code, c.fault) for c in calls] == [(400, 230020, True), (200, 0, False)]


async def test_inline_cards_and_full_card_updates(
    feishu_emulator: FeishuEmulatorThread, raw: RawFeishuClient, api: Api
) -> None:
    sent = await feishu_emulator.send_user_message(ID, text="cards")
    inline = {"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "inline"}]}}
    assert (await api.reply(sent.message_id, "interactive", inline))[1]["code"] == 0
    _, created = await api.create_card(streaming_card("old"))
    card_id = created["data"]["card_id"]
    content = {"type": "card", "data": {"card_id": card_id}}
    assert (await api.send(sent.chat_id, "interactive", content))[1]["code"] == 0
    replacement = streaming_card("replaced")
    body = {"card": {"type": "card_json", "data": json.dumps(replacement)}, "sequence": 1}
    assert (await api.call("PUT", f"{CARDS}/{card_id}", body))[1]["code"] == 0
    assert (await api.call("PUT", f"{CARDS}/{card_id}", body))[1]["code"] == 300317
    view = await feishu_emulator.chat_view(sent.chat_id)
    assert view is not None
    assert [(i["kind"], i["text"]) for i in view["items"][1:]] == [
        ("message", "inline"),
        ("card", "replaced"),
    ]
