"""The admin web page in a real Chromium: clicks reach the daemon's real state and the emulator.

The test ends with a screenshot of the page (a connected channel, a failed one, a conversation).
It is written to the test's temporary directory; with UPDATE_SCREENSHOTS=1 it also replaces
docs/admin-page.png, the picture the README shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import EmulatorThread
from channels.dingtalk.emulator.server import DingTalkEmulator
from channels.model import ChannelState
from channels.supervisor import ChannelStatus
from daemon.app import Daemon
from daemon.config import validate
from storage.records import VoiceCallRecord
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, dingtalk_emulator
from tests.e2e_support import CHANNEL, FAST_BACKOFF, Stack, settings_for, wait_until
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    FeishuEmulatorThread,
    feishu_emulator,
)
from tests.web_support import Page, browser, dot_colour, expect

__all__ = ["browser", "dingtalk_emulator", "feishu_emulator"]

TOKEN = "test-token"
BROKEN = "hr-helpdesk"  # a config channel whose secret the platform rejects: it fails for real
# what a hostile platform, user or operator might put in a string the page shows
HOSTILE = '<img src=x onerror="window.pwned=1">"\'&amp;<script>window.pwned=2</script>'
HOSTILE_AGENT = f"agent {HOSTILE}"
CREATED = "support-bot"
VOICED = "voice-bot"
VOICE_BASE = "https://bot.example.com"
ZEGO_SECRET = "zego-server-secret-typed-in-the-page"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "admin-page.png"
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT")


@pytest.fixture
async def stack(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> AsyncIterator[Stack]:
    """The e2e daemon (channel "dt" on the emulator) with an admin token and a broken channel."""
    base = settings_for(tmp_path, dingtalk_emulator.url, None).model_dump(mode="python")
    channel = {**base["channels"][0], "client_secret": DINGTALK_CLIENT_SECRET}
    broken = {**channel, "id": BROKEN, "client_secret": "expired-secret"}
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path), "log_level": "DEBUG"},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "webhooks": {"listen": "127.0.0.1:0"},  # serves voice once a channel has it
            "agents": {
                "default": {"type": "echo", "delay": 0.01},
                HOSTILE_AGENT: {"type": "echo", "delay": 0.01},
            },
            "channels": [channel, broken],
        }
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    stack = Stack(daemon, dingtalk_emulator, None)
    try:
        await stack.connected()
        yield stack
    finally:
        await stack.stop()


@pytest.fixture
async def page(browser: Any, stack: Stack) -> AsyncIterator[Page]:
    """A fresh browser tab on the admin page; uncaught script errors fail the test."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    tab = await context.new_page()
    errors = watch_errors(tab)
    assert stack.daemon.admin is not None
    response = await tab.goto(f"http://127.0.0.1:{stack.daemon.admin.port}/")
    assert response is not None
    policy = await response.header_value("Content-Security-Policy")
    assert policy is not None and "frame-ancestors 'none'" in policy
    yield tab
    await context.close()
    assert errors == [], f"the page raised: {errors}"


def watch_errors(tab: Page) -> list[str]:
    """Uncaught script errors and Content-Security-Policy violations, collected for the end."""
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return errors


def status(stack: Stack, channel_id: str) -> ChannelStatus:
    assert stack.daemon.manager is not None
    return stack.daemon.manager.status(channel_id)


def live_ids(emulator: DingTalkEmulator) -> list[str]:
    """Ids of the emulator's open sockets for the test app (run on the emulator's loop)."""
    return [c.connection_id for c in emulator.live_connections(DINGTALK_CLIENT_ID)]


async def wait_live_connections(emulator: EmulatorThread, count: int) -> list[str]:
    await emulator.wait_for(lambda e: len(live_ids(e)) == count)
    return await emulator.call(live_ids)


async def enter_token(page: Page) -> None:
    """The API answers 401 until the token is given; a wrong one is asked for again."""
    dialog = page.locator("#token-dialog")
    await expect(dialog).to_be_visible()
    await page.locator("#token-input").fill("not-the-token")
    await page.locator("#token-input").press("Enter")
    await expect(page.locator("#token-reason")).to_contain_text("rejected")
    await expect(dialog).to_be_visible()
    await page.locator("#token-input").fill(TOKEN)
    await page.locator("#token-input").press("Enter")
    await expect(dialog).to_be_hidden()


async def test_admin_page_drives_the_real_daemon(
    page: Page, stack: Stack, dingtalk_emulator: EmulatorThread, tmp_path: Path
) -> None:
    emulator = dingtalk_emulator
    await enter_token(page)

    # The config channel: connected, green; edited in the file, so no edit or delete here.
    row = page.locator(f'tr[data-channel-id="{CHANNEL}"]')
    dot = row.locator(".dot")
    await expect(dot).to_have_attribute("data-state", "connected")
    assert await dot_colour(dot) == "green"
    await expect(row.get_by_role("button", name="Edit")).to_be_hidden()
    await expect(row.get_by_role("button", name="Delete")).to_be_hidden()
    first_connected_at = await row.locator("time.connected-at").get_attribute("datetime")
    assert first_connected_at is not None and ISO_TIME.match(first_connected_at)
    [first_connection] = await emulator.call(live_ids)

    # The broken channel shows its real error, truncated, in full on hover.
    broken = page.locator(f'tr[data-channel-id="{BROKEN}"]')
    await expect(broken.locator(".dot")).to_have_attribute("data-state", "failed")
    assert await dot_colour(broken.locator(".dot")) == "dark red"
    assert stack.daemon.channels is not None
    last_error = (await stack.daemon.channels.get(BROKEN))["status"]["last_error"]
    assert "InvalidAuthentication" in last_error
    await expect(broken.locator(".error-text")).to_have_text(last_error)
    await expect(broken.locator(".error-text")).to_have_attribute("title", last_error)

    # The token is kept for the tab: a reload asks for nothing.
    await page.reload()
    await expect(dot).to_have_attribute("data-state", "connected")
    await expect(page.locator("#token-dialog")).to_be_hidden()

    # Toggle off: the daemon disables the channel and the emulator's socket closes.
    switch = row.get_by_role("switch")
    await switch.uncheck()
    await wait_until(lambda: stack.state() is ChannelState.DISABLED)
    await wait_live_connections(emulator, 0)
    assert await emulator.live_connections(DINGTALK_CLIENT_ID) == []
    await expect(dot).to_have_attribute("data-state", "disabled")
    assert await dot_colour(dot) == "grey"
    await expect(row.locator("time.connected-at")).to_have_text("—")

    # Toggle on: a new connection and a fresh connected time.
    await switch.check()
    await stack.connected()
    [second_connection] = await wait_live_connections(emulator, 1)
    assert second_connection != first_connection
    await expect(dot).to_have_attribute("data-state", "connected")
    await expect(row.locator("time.connected-at")).to_have_attribute("datetime", ISO_TIME)
    second_connected_at = await row.locator("time.connected-at").get_attribute("datetime")
    assert second_connected_at is not None and second_connected_at > first_connected_at
    assert await dot_colour(dot) == "green"

    # Restart: the old socket goes, a new one comes.
    await row.get_by_role("button", name="Restart").click()
    await expect(page.locator(".toast", has_text=f"{CHANNEL} restarted")).to_be_visible()
    await emulator.wait_for(lambda e: live_ids(e) not in ([], [second_connection]))
    await stack.connected()
    await expect(row.locator("time.connected-at")).not_to_have_attribute(
        "datetime", second_connected_at
    )

    # Create through the form: the server's 422 lands next to each field it names.
    await page.get_by_role("button", name="New channel").click()
    dialog = page.locator("#channel-dialog")
    await expect(dialog).to_be_visible()
    form = dialog.locator("form")
    await form.locator('[name="id"]').fill("support bot")
    await form.locator('[name="client_id"]').fill(DINGTALK_CLIENT_ID)
    await form.locator('[name="api_base"]').fill(emulator.url)
    await form.locator('[name="agent"]').select_option("default")
    await dialog.get_by_role("button", name="Create").click()
    await expect(form.locator('[data-field="id"] .field-error')).to_contain_text("pattern")
    await expect(form.locator('[data-field="client_secret"] .field-error')).to_contain_text(
        "required"
    )
    await expect(form.locator('[data-field="client_id"] .field-error')).to_be_hidden()
    await form.locator('[name="id"]').fill(CREATED)
    await form.locator('[name="client_secret"]').fill(DINGTALK_CLIENT_SECRET)
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    created = page.locator(f'tr[data-channel-id="{CREATED}"]')
    await expect(created.locator(".dot")).to_have_attribute("data-state", "connected")
    await expect(created.locator(".badge")).to_have_text("api")
    await wait_live_connections(emulator, 2)
    version = (await stack.daemon.channels.get(CREATED))["version"]
    connected_at = status(stack, CREATED).connected_at

    # Edit: the secret input starts empty; leaving it empty sends nothing and keeps the secret.
    await created.get_by_role("button", name="Edit").click()
    await expect(dialog).to_be_visible()
    secret = form.locator('[name="client_secret"]')
    await expect(secret).to_have_value("")
    await expect(secret).to_have_attribute("placeholder", "unchanged — type to replace")
    await expect(form.locator('[name="id"]')).to_be_disabled()
    await expect(form.locator('[name="client_id"]')).to_have_value(DINGTALK_CLIENT_ID)
    await form.locator('[name="card_template_id"]').fill("tpl.ai.schema")
    async with page.expect_request(lambda r: r.method == "PATCH") as patch:
        await dialog.get_by_role("button", name="Save").click()
    assert (await patch.value).post_data_json == {"card_template_id": "tpl.ai.schema"}
    await expect(dialog).to_be_hidden()
    assert stack.daemon.store is not None
    record = await stack.daemon.store.get_channel(CREATED)
    assert record is not None and record.version > version
    kept = stack.daemon.channels.decode(record)
    assert isinstance(kept, DingTalkChannelConfig)
    assert kept.client_secret.get_secret_value() == DINGTALK_CLIENT_SECRET
    assert kept.card_template_id == "tpl.ai.schema"
    # The edit restarted the channel, which connects again with the kept secret.
    await wait_until(
        lambda: (
            status(stack, CREATED).state is ChannelState.CONNECTED
            and status(stack, CREATED).connected_at != connected_at
        )
    )

    # Delete, after a confirmation that names the channel.
    await created.get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm-dialog")
    await expect(confirm).to_contain_text(CREATED)
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(created).to_have_count(1)
    await created.get_by_role("button", name="Delete").click()
    await confirm.get_by_role("button", name="Delete").click()
    await expect(created).to_have_count(0)
    assert await stack.daemon.store.get_channel(CREATED) is None
    await wait_live_connections(emulator, 1)

    # The conversation browser: pick the channel, then the conversation, then read it.
    question = "Hello! Could you summarise today's release notes for me?"
    await stack.say(question)
    await page.locator("#conversation-channel").select_option(CHANNEL)
    await page.locator("button.conversation").first.click()
    messages = page.locator("#thread .message")
    await expect(messages).to_have_count(2)
    await expect(messages.nth(0)).to_have_attribute("data-role", "user")
    await expect(messages.nth(0).locator(".bubble")).to_have_text(question)
    await expect(messages.nth(1)).to_have_attribute("data-role", "assistant")
    await expect(messages.nth(1).locator(".bubble")).to_have_text(f"You said: {question}")
    await expect(row.locator("td.received")).to_have_text("1")

    await save_screenshot(page, tmp_path)


async def save_screenshot(page: Page, tmp_path: Path) -> None:
    """A still picture: no hover, no toast, no animation mid-pulse."""
    await page.mouse.move(0, 0)
    await page.locator(".toast").evaluate_all("nodes => nodes.forEach(n => n.remove())")
    path = tmp_path / "admin-page.png"
    await page.screenshot(path=path, full_page=True, animations="disabled")
    assert path.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


async def test_a_feishu_channel_is_created_from_the_form(
    page: Page, stack: Stack, feishu_emulator: FeishuEmulatorThread
) -> None:
    await enter_token(page)
    await page.get_by_role("button", name="New channel").click()
    dialog = page.locator("#channel-dialog")
    form = dialog.locator("form")
    await form.locator('[name="type"]').select_option("feishu")
    await expect(form.locator('[name="client_id"]')).to_have_count(0)
    await expect(form.locator('[name="app_secret"]')).to_have_attribute("type", "password")
    await form.locator('[name="id"]').fill("feishu-support")
    await form.locator('[name="app_id"]').fill(FEISHU_APP_ID)
    await form.locator('[name="app_secret"]').fill(FEISHU_APP_SECRET)
    await form.locator('[name="domain"]').fill(feishu_emulator.url)
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    row = page.locator('tr[data-channel-id="feishu-support"]')
    await expect(row.locator(".dot")).to_have_attribute("data-state", "connected")
    await expect(row.locator("td").nth(2)).to_contain_text("feishu")
    await feishu_emulator.wait_for(lambda e: len(e.live_connections(FEISHU_APP_ID)) == 1)


async def test_a_voice_section_is_created_shown_masked_and_kept_on_edit(
    page: Page, stack: Stack, dingtalk_emulator: EmulatorThread
) -> None:
    """The nested [channels.voice] settings: sub-sections of the form, secrets write-only."""
    await enter_token(page)
    await page.get_by_role("button", name="New channel").click()
    dialog = page.locator("#channel-dialog")
    form = dialog.locator("form")
    await form.locator('[name="id"]').fill(VOICED)
    await form.locator('[name="client_id"]').fill(DINGTALK_CLIENT_ID)
    await form.locator('[name="client_secret"]').fill(DINGTALK_CLIENT_SECRET)
    await form.locator('[name="api_base"]').fill(dingtalk_emulator.url)
    # an optional section is switched off, its fields out of sight, until switched on
    await expect(form.locator('[name="voice"]')).not_to_be_checked()
    await expect(form.locator('[name="voice.public_base_url"]')).to_be_hidden()
    await form.locator('[name="voice"]').check()
    await form.locator('[name="voice.public_base_url"]').fill(VOICE_BASE)
    await form.locator('[name="voice.zego"]').check()
    await form.locator('[name="voice.zego.app_id"]').fill("1234567890")
    secret = form.locator('[name="voice.zego.server_secret"]')
    await expect(secret).to_have_attribute("type", "password")
    await secret.fill(ZEGO_SECRET)
    async with page.expect_request(lambda r: r.method == "POST") as post:
        await dialog.get_by_role("button", name="Create").click()
    sent = (await post.value).post_data_json
    assert sent["voice"] == {
        "public_base_url": VOICE_BASE,
        "max_call_seconds": 1800,
        "zego": {
            "app_id": 1234567890,
            "server_secret": ZEGO_SECRET,
            "agent_id": "channeld-voice",
            "api_base": "https://aigc-aiagent-api.zegotech.cn",
            "window_size": 4,
        },
    }
    await expect(dialog).to_be_hidden()
    row = page.locator(f'tr[data-channel-id="{VOICED}"]')
    await expect(row.locator(".dot")).to_have_attribute("data-state", "connected")
    await expect(row.locator(".voice-mark")).to_have_text("voice calls")

    # the details: the URLs for the clouds' consoles, each setting, the secret as ***
    await row.locator("td.channel-id button").click()
    detail = page.locator("#detail-dialog")
    await expect(detail).to_be_visible()
    await expect(detail.locator('[data-setting="voice.zego.server_secret"] dd')).to_have_text("***")
    await expect(detail.locator('[data-setting="client_secret"] dd')).to_have_text("***")
    await expect(detail.locator('[data-setting="voice.zego.app_id"] dd')).to_have_text("1234567890")
    await expect(detail.locator('[data-url="llm_endpoint"] dd')).to_have_text(
        f"{VOICE_BASE}/voice/{VOICED}/chat/completions"
    )
    await expect(detail.locator('[data-url="callback"] dd')).to_have_text(
        f"{VOICE_BASE}/hooks/{VOICED}/voice"
    )
    await expect(detail.locator('[data-url="aliyun_llm_base"]')).to_have_count(0)  # no Alibaba
    await detail.get_by_role("button", name="Close").click()

    # edit: the sections open as stored, the secret input empty; an edit elsewhere keeps it
    await row.get_by_role("button", name="Edit").click()
    await expect(form.locator('[name="voice"]')).to_be_checked()
    await expect(form.locator('[name="voice.zego"]')).to_be_checked()
    await expect(form.locator('[name="voice.aliyun"]')).not_to_be_checked()
    await expect(form.locator('[name="voice.zego.app_id"]')).to_have_value("1234567890")
    await expect(secret).to_have_value("")
    await expect(secret).to_have_attribute("placeholder", "unchanged — type to replace")
    await form.locator('[name="voice.max_call_seconds"]').fill("600")
    async with page.expect_request(lambda r: r.method == "PATCH") as patch:
        await dialog.get_by_role("button", name="Save").click()
    assert (await patch.value).post_data_json == {"voice": {"max_call_seconds": 600}}
    await expect(dialog).to_be_hidden()
    assert stack.daemon.store is not None and stack.daemon.channels is not None
    record = await stack.daemon.store.get_channel(VOICED)
    assert record is not None
    assert ZEGO_SECRET not in str(record.spec)
    voice = stack.daemon.channels.decode(record).voice
    assert voice is not None and voice.zego is not None
    assert voice.max_call_seconds == 600
    assert voice.zego.server_secret.get_secret_value() == ZEGO_SECRET

    # the server's refusal at a section's path lands under that section
    await row.get_by_role("button", name="Edit").click()
    await form.locator('[name="voice.zego"]').uncheck()
    async with page.expect_request(lambda r: r.method == "PATCH") as patch:
        await dialog.get_by_role("button", name="Save").click()
    assert (await patch.value).post_data_json == {"voice": {"zego": None}}
    await expect(form.locator('[data-section="voice"] > .field-error')).to_contain_text(
        "needs [channels.voice.zego] or [channels.voice.aliyun]"
    )
    await page.locator("#channel-dialog [data-close]").click()
    assert ZEGO_SECRET not in await page.content()


async def test_voice_turns_show_inline_in_the_conversation(page: Page, stack: Stack) -> None:
    """A call's turns sit between the typed ones, marked; a retried round redraws in place."""
    await enter_token(page)
    typed = "Typed before the call"
    await stack.say(typed)
    await page.locator("#conversation-channel").select_option(CHANNEL)
    await page.locator("button.conversation").first.click()
    messages = page.locator("#thread .message")
    await expect(messages).to_have_count(2)  # the question and its echo
    assert stack.daemon.store is not None
    store = stack.daemon.store
    [conversation] = await store.list_conversations(CHANNEL)
    now = datetime.now(UTC)
    await store.voice_call_add(
        VoiceCallRecord(
            id="call-1",
            channel_id=CHANNEL,
            provider="zego",
            conversation_id=conversation.id,
            user_id=conversation.user_id,
            platform_user_id="caller",
            secret_hash="0" * 64,
            started_at=now,
            expires_at=now + timedelta(minutes=30),
        )
    )

    async def turn(role: str, content: str, *, interrupted: bool = False) -> None:
        await store.voice_turn_put(
            conversation.id,
            call_id="call-1",
            round="round-1",
            role=role,
            content=content,
            now=datetime.now(UTC),
            interrupted=interrupted,
        )

    await turn("user", "Spoken after pressing call")
    await turn("assistant", "An answer the caller cut", interrupted=True)
    await expect(messages).to_have_count(4)
    await expect(messages.nth(0)).to_have_attribute("data-source", "text")
    await expect(messages.nth(0).locator(".bubble")).to_have_text(typed)
    await expect(messages.nth(2)).to_have_attribute("data-source", "voice")
    await expect(messages.nth(2).locator(".turn-mark")).to_have_text(["voice"])
    await expect(messages.nth(3).locator(".turn-mark")).to_have_text(["voice", "interrupted"])
    # the cloud retries the round: the same turn, a new answer, redrawn where it was
    await turn("assistant", "The whole answer of the retried round")
    await expect(messages.nth(3).locator(".bubble")).to_have_text(
        "The whole answer of the retried round"
    )
    await expect(messages.nth(3).locator(".turn-mark")).to_have_text(["voice"])
    await expect(messages).to_have_count(4)


async def text_of(locator: Any) -> str:
    """A node's text exactly, lone surrogates included (JSON.stringify escapes them)."""
    text: str = json.loads(await locator.evaluate("node => JSON.stringify(node.textContent)"))
    return text


async def test_hostile_strings_are_shown_as_text(
    page: Page, stack: Stack, dingtalk_emulator: EmulatorThread
) -> None:
    """Markup, quotes, a lone surrogate and very long strings from every source the page shows."""
    await enter_token(page)
    assert stack.daemon.channels is not None
    # a platform error message, as the platform sent it, lands in last_error
    platform_message = HOSTILE + " \udcff " + "x" * 2000
    await dingtalk_emulator.add_fault(
        "/v1.0/gateway/connections/open",
        401,
        body={"code": "InvalidAuthentication", "message": platform_message},
    )
    long_setting = HOSTILE * 200
    created = await stack.daemon.channels.create(
        {
            "id": "hostile",
            "type": "dingtalk",
            "agent": HOSTILE_AGENT,
            "client_id": DINGTALK_CLIENT_ID,
            "client_secret": DINGTALK_CLIENT_SECRET,
            "api_base": dingtalk_emulator.url,
            "card_template_id": long_setting,
        }
    )
    assert created["agent"] == HOSTILE_AGENT
    row = page.locator('tr[data-channel-id="hostile"]')
    await expect(row.locator(".dot")).to_have_attribute("data-state", "failed")
    last_error = (await stack.daemon.channels.get("hostile"))["status"]["last_error"]
    assert "<script>" in last_error and "\udcff" in last_error
    assert await text_of(row.locator(".error-text")) == last_error
    assert (
        json.loads(await row.locator(".error-text").evaluate("node => JSON.stringify(node.title)"))
        == last_error
    )
    await expect(row.locator("td").nth(3)).to_have_text(HOSTILE_AGENT)

    # the edit form shows the long setting as an input's value, the agent as an option
    await row.get_by_role("button", name="Edit").click()
    form = page.locator("#channel-dialog form")
    await expect(form.locator('[name="card_template_id"]')).to_have_value(long_setting)
    await expect(form.locator('[name="agent"]')).to_have_value(HOSTILE_AGENT)
    await page.locator("#channel-dialog [data-close]").click()

    # users' text and the platform's chat ids, in the conversation browser
    long_text = "long-" * 4000  # one word: the echo agent answers it in one step
    group = "cid-<img src=x onerror=window.pwned=3>\"'"  # no dots: the emulator splits on them
    for text in (HOSTILE, long_text):
        await stack.say(text, conversation_type="2", conversation_id=group)
    await stack.idle()
    await page.locator("button.conversation").first.click()
    messages = page.locator("#thread .message")
    await expect(messages).to_have_count(4)
    await expect(messages.nth(0).locator(".bubble")).to_have_text(HOSTILE)
    await expect(messages.nth(1).locator(".bubble")).to_have_text(f"You said: {HOSTILE}")
    assert await text_of(messages.nth(2).locator(".bubble")) == long_text
    assert group in await text_of(page.locator("#thread .thread-key").first)

    # nothing became markup, nothing ran
    for container in ("#channel-rows", "#thread", "#conversation-list", "#channel-dialog"):
        await expect(page.locator(f"{container} img")).to_have_count(0)
        await expect(page.locator(f"{container} script")).to_have_count(0)
    assert await page.evaluate("window.pwned") is None


async def test_the_users_view_shows_links_blocks_and_unlinks_a_person(
    page: Page, stack: Stack
) -> None:
    """An operator finds who wrote, links their DingTalk account to the directory's person,
    blocks and unblocks them, and unlinks an account; hostile names stay text."""
    assert stack.daemon.store is not None
    store = stack.daemon.store
    now = datetime.now(UTC)
    await enter_token(page)
    sent = await stack.say("Where is my order?", sender_staff_id="staff-7", sender_nick="Zhang San")
    await stack.wait_bot_items(
        sent.conversation_id, lambda items: any(i.get("done") for i in items)
    )
    await stack.idle()
    person = await store.user_for_person(
        directory_id="file:zhang.san@example.com",
        name="Zhang San",
        email="zhang.san@example.com",
        groups=["support", "shanghai"],
        auth_source="file",
        now=now,
    )
    await store.link_identity("feishu", "tenant-1", "ou_zs", person, display_name="张三", now=now)
    hostile = await store.resolve_user("feishu", "tenant-1", "ou_x", HOSTILE)
    [written] = await store.list_conversations(CHANNEL)
    found = await store.get_user(written.user_id)
    assert found is not None
    auto, [dingtalk] = found

    # the conversation names the person who wrote, not an opaque id
    conversation = page.locator("button.conversation").first
    await expect(conversation.locator(".conv-person")).to_have_text("Zhang San")
    await conversation.click()
    await expect(page.locator("#thread .person-link")).to_have_text("Zhang San")

    # the Users view lists everyone; a search finds the directory's person by e-mail
    users = page.locator("#user-list button.person-item")
    await expect(users).to_have_count(3)
    await page.locator("#user-search").fill("ZHANG.SAN@")
    await expect(users).to_have_count(1)
    await users.first.click()
    panel = page.locator("#person")
    await expect(panel.locator("#person-name")).to_have_text("Zhang San")
    await expect(panel.locator(".facts")).to_contain_text("support, shanghai")
    await expect(panel.locator(".facts")).to_contain_text("file:zhang.san@example.com")
    rows = panel.locator("tr[data-identity-id]")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("ou_zs")

    # link the DingTalk account by its id: one person on both platforms
    await panel.locator("#link-identity").fill(str(dingtalk.id))
    await panel.get_by_role("button", name="Link identity").click()
    await expect(rows).to_have_count(2)
    await expect(panel.locator(f'tr[data-identity-id="{dingtalk.id}"]')).to_contain_text("staff-7")
    owner = await store.identity_owner(dingtalk.platform, dingtalk.tenant, "staff-7")
    assert owner is not None and owner.id == person

    # block, then unblock: the badge follows the daemon's state
    await panel.get_by_role("button", name="Block").click()
    await expect(panel.locator(".badge-blocked")).to_have_text("blocked")
    await expect(page.locator(f'#user-list [data-user-id="{person}"]')).to_have_attribute(
        "data-blocked", "true"
    )
    blocked = await store.get_user(person)
    assert blocked is not None and blocked[0].blocked
    await panel.get_by_role("button", name="Unblock").click()
    await expect(panel.locator(".badge-blocked")).to_have_count(0)
    unblocked = await store.get_user(person)
    assert unblocked is not None and not unblocked[0].blocked

    # unlink the Feishu account: it becomes a person of its own
    feishu = panel.locator("tr[data-identity-id]", has_text="ou_zs")
    await feishu.get_by_role("button", name="Unlink").click()
    await expect(rows).to_have_count(1)
    await expect(page.locator(".toast", has_text="feishu ou_zs is now user")).to_be_visible()
    moved = await store.identity_owner("feishu", "tenant-1", "ou_zs")
    assert moved is not None and moved.id != person

    # a wrong id is refused with the server's reason, nothing changes
    await panel.locator("#link-identity").fill("987654")
    await panel.get_by_role("button", name="Link identity").click()
    await expect(page.locator(".toast-error", has_text="no identity 987654")).to_be_visible()
    await expect(rows).to_have_count(1)

    # the person from a conversation: the search is cleared and the person selected
    await page.locator("#thread .person-link").click()
    await expect(page.locator("#user-search")).to_have_value("")
    await expect(page.locator(f'#user-list [data-user-id="{auto.id}"]')).to_have_attribute(
        "aria-pressed", "true"
    )

    # a hostile display name is text in the list and the panel
    await page.locator(f'#user-list [data-user-id="{hostile}"]').click()
    await expect(panel.locator("#person-name")).to_have_text(HOSTILE)
    for container in ("#user-list", "#person"):
        await expect(page.locator(f"{container} img")).to_have_count(0)
        await expect(page.locator(f"{container} script")).to_have_count(0)
    assert await page.evaluate("window.pwned") is None


async def test_from_a_person_to_what_they_asked(page: Page, stack: Stack) -> None:
    """Who is this person and what did they ask: the Users view lists a person's conversations,
    newest first, and a click reads one in the conversation browser."""
    asked = "Can I get a refund for order 1042?"
    later = "Team: who has the release checklist?"
    other = "Li Si's own question"
    for text, staff_id, nick, chat in (
        (asked, "staff-7", "Zhang San", "1"),
        (other, "staff-8", "Li Si", "1"),
        (later, "staff-7", "Zhang San", "2"),  # a group chat
    ):
        # one at a time: a conversation's last activity (its answer) comes before the next one's
        sent = await stack.say(
            text, sender_staff_id=staff_id, sender_nick=nick, conversation_type=chat
        )
        await stack.wait_bot_items(
            sent.conversation_id, lambda items: any(i.get("done") for i in items)
        )
        await stack.idle()
    await enter_token(page)
    # the browser shows another channel: opening the person's conversation shows every channel
    await page.locator("#conversation-channel").select_option(BROKEN)
    await expect(page.locator("#conversation-list .empty")).to_have_text("No conversations yet.")

    await page.locator("#user-search").fill("zhang")
    users = page.locator("#user-list button.person-item")
    await expect(users).to_have_count(1)
    await users.first.click()
    panel = page.locator("#person")
    await expect(panel.locator("#person-name")).to_have_text("Zhang San")
    theirs = panel.locator("#person-conversations button.conversation")
    await expect(theirs).to_have_count(2)  # not Li Si's
    await expect(theirs.locator(".conv-title")).to_have_text(["Group chat", "Direct chat"])
    await expect(theirs.locator(".badge")).to_have_text([CHANNEL, CHANNEL])

    await theirs.nth(1).click()
    await expect(page.locator("#conversation-channel")).to_have_value("")
    messages = page.locator("#thread .message")
    await expect(messages).to_have_count(2)
    await expect(messages.nth(0)).to_have_attribute("data-role", "user")
    await expect(messages.nth(0).locator(".bubble")).to_have_text(asked)
    await expect(page.locator("#thread .person-link")).to_have_text("Zhang San")
    direct = await theirs.nth(1).get_attribute("data-conversation-id")
    await expect(
        page.locator(f'#conversation-list [data-conversation-id="{direct}"]')
    ).to_have_attribute("aria-pressed", "true")
    await expect(theirs.nth(1)).to_have_attribute("aria-pressed", "true")
    await expect(page.locator("#conversation-list button.conversation")).to_have_count(3)

    # the other one: the group question, the same person
    await theirs.nth(0).click()
    await expect(messages.nth(0).locator(".bubble")).to_have_text(later)
    await expect(theirs.nth(0)).to_have_attribute("aria-pressed", "true")
    assert other not in await page.locator("#thread").inner_text()


async def test_the_login_url_signs_the_tab_in_and_leaves_the_address_bar(
    browser: Any, tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    """No `[admin] token`: the daemon generates one, and its login URL opens the page."""
    daemon = Daemon(settings_for(tmp_path, dingtalk_emulator.url, None), backoff=FAST_BACKOFF)
    await daemon.start()
    context = await browser.new_context()
    try:
        assert daemon.admin is not None and daemon.admin.token_file is not None
        token = daemon.admin.token
        base = f"http://127.0.0.1:{daemon.admin.port}/"
        tab = await context.new_page()
        errors = watch_errors(tab)
        await tab.goto(f"{base}#token={token}")
        row = tab.locator(f'tr[data-channel-id="{CHANNEL}"]')
        await expect(row.locator(".dot")).to_have_attribute("data-state", "connected")
        await expect(tab.locator("#token-dialog")).to_be_hidden()
        assert tab.url == base  # out of the address bar and the history
        await tab.go_back()
        assert token not in tab.url
        # without it, a fresh tab is asked for the token
        other = await context.new_page()
        await other.goto(base)
        await expect(other.locator("#token-dialog")).to_be_visible()
        assert errors == []
    finally:
        await context.close()
        await daemon.stop()
