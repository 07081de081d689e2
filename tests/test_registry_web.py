"""The admin page's form for a platform registered in a test, in a real Chromium: the form comes
from the OpenAPI document the registry feeds, with no change to the page or to `daemon/`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import validate
from tests.callback_support import HOOK, HookPlatform, hook_platform
from tests.e2e_support import FAST_BACKOFF
from tests.registry_support import DUMMY, Dummy, DummyChannelConfig, dummy
from tests.web_support import Page, browser, expect

__all__ = ["browser", "dummy", "hook_platform"]

TOKEN = "registry-web-token"


@pytest.fixture
async def page(tmp_path: Path, browser: Any, dummy: Dummy) -> AsyncIterator[Page]:
    """The admin page of a daemon with no channel, signed in; script errors fail the test."""
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path)},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "webhooks": {"listen": "127.0.0.1:0"},
            "agents": {"default": {"type": "echo"}},
        }
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    context = await browser.new_context()
    try:
        tab = await context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        assert daemon.admin is not None
        await tab.goto(f"http://127.0.0.1:{daemon.admin.port}/")
        await tab.locator("#token-input").fill(TOKEN)
        await tab.locator("#token-input").press("Enter")
        await expect(tab.locator("#token-dialog")).to_be_hidden()
        yield tab
        assert errors == [], f"the page raised: {errors}"
    finally:
        await context.close()
        await daemon.stop()


async def test_the_form_of_a_registered_platform(page: Page, dummy: Dummy) -> None:
    await page.get_by_role("button", name="New channel").click()
    dialog = page.locator("#channel-dialog")
    form = dialog.locator("form")
    await form.locator('[name="type"]').select_option(DUMMY)
    # the dummy's own settings, the secret as a password field; no other platform's
    await expect(form.locator('[name="client_id"]')).to_have_count(0)
    await expect(form.locator('[name="token"]')).to_have_attribute("type", "password")
    await form.locator('[name="id"]').fill("dm-web")
    await form.locator('[name="room"]').fill("web-room")
    await form.locator('[name="token"]').fill("typed-in-the-page")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    row = page.locator('tr[data-channel-id="dm-web"]')
    # built through the platform's factory, which refuses every room
    await expect(row.locator(".dot")).to_have_attribute("data-state", "failed")
    await expect(row).to_contain_text("dummy room 'web-room' has no server")
    (built,) = dummy.built
    assert isinstance(built, DummyChannelConfig)
    assert built.token.get_secret_value() == "typed-in-the-page"


async def test_a_webhook_channel_shows_the_url_to_give_its_platform(
    page: Page, hook_platform: HookPlatform
) -> None:
    await page.get_by_role("button", name="New channel").click()
    dialog = page.locator("#channel-dialog")
    form = dialog.locator("form")
    await form.locator('[name="type"]').select_option(HOOK)
    await form.locator('[name="id"]').fill("hk-web")
    await form.locator('[name="secret"]').fill("typed-in-the-page")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    row = page.locator('tr[data-channel-id="hk-web"]')
    await expect(row.locator(".dot")).to_have_attribute("data-state", "connected")
    # the listener opened with the first webhook channel, on the port it was given
    await expect(row.locator("code.webhook-url")).to_have_text(
        re.compile(r"^http://127\.0\.0\.1:[1-9][0-9]*/hooks/hk-web$")
    )
