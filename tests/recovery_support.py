"""What the crash-recovery tests share: a real `channeld run`'s config, channel blocks, cards,
and the crash itself."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.agents_support import FAKE_LLM_KEY
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, DINGTALK_TEMPLATE
from tests.e2e_support import DaemonProcess
from tests.feishu_support import FEISHU_APP_ID, FEISHU_APP_SECRET
from tools.fake_llm import FakeLLM

S = TypeVar("S")


def write_config(
    tmp_path: Path, llm: FakeLLM, channel: str, *, daemon: str = "", sections: str = ""
) -> Path:
    """channeld.toml in `tmp_path`: state there, admin on a free port, the fake LLM, one channel.

    `channel` is the `[[channels]]` block's body; `daemon` adds lines to `[daemon]`; `sections`
    adds whole sections (e.g. `[webhooks]`).
    """
    path = tmp_path / "channeld.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path}"
{daemon}

[admin]
listen = "127.0.0.1:0"
{sections}

[agents.default]
type = "openai"
base_url = "{llm.url}"
api_key = "{FAKE_LLM_KEY}"
model = "fake-model"
max_retries = 0

[[channels]]
{channel}
""",
        encoding="utf-8",
    )
    return path


def dingtalk_channel(url: str, card_update_interval: float) -> str:
    """The `[[channels]]` body of channel `dt` on the DingTalk emulator at `url`."""
    return f"""id = "dt"
type = "dingtalk"
client_id = "{DINGTALK_CLIENT_ID}"
client_secret = "{DINGTALK_CLIENT_SECRET}"
card_template_id = "{DINGTALK_TEMPLATE}"
api_base = "{url}"
card_update_interval = {card_update_interval}
"""


def feishu_channel(url: str, card_update_interval: float) -> str:
    """The `[[channels]]` body of channel `fs` on the Feishu emulator at `url`."""
    return f"""id = "fs"
type = "feishu"
app_id = "{FEISHU_APP_ID}"
app_secret = "{FEISHU_APP_SECRET}"
domain = "{url}"
card_update_interval = {card_update_interval}
"""


def cards_of(view: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The cards in an emulator's chat view (none while the chat does not exist)."""
    return [i for i in (view or {"items": []})["items"] if i["kind"] == "card"]


def webhooks_section(port: int) -> str:
    """A `[webhooks]` section whose callback listener listens on loopback `port`."""
    return f'[webhooks]\nlisten = "127.0.0.1:{port}"\n'


@asynccontextmanager
async def crash_mid_answer(
    config: Path,
    channel_id: str,
    llm: FakeLLM,
    ask: Callable[[], Awaitable[S]],
    shown: Callable[[S], Awaitable[object]],
) -> AsyncIterator[tuple[S, DaemonProcess]]:
    """`channeld run` on `config`, the LLM stalling after three tokens: `ask` once the channel is
    connected, wait for `shown`, SIGKILL, start again. Yields what `ask` returned and the second
    process, which must end cleanly on SIGTERM."""
    llm.script_stall_mid_stream(after_tokens=3, seconds=60)
    first = DaemonProcess(config)
    await first.start()
    await first.wait_log(f"channel {channel_id}: connected")
    sent = await ask()
    await shown(sent)
    await asyncio.sleep(0.3)  # let the journal record what the user has seen
    assert await first.end(signal.SIGKILL) == -signal.SIGKILL
    second = DaemonProcess(config)
    await second.start()
    try:
        yield sent, second
    finally:
        assert await second.end(signal.SIGTERM) == 0
