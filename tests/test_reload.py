"""SIGHUP re-reads the config file and restarts only the channels whose settings changed."""

from __future__ import annotations

import signal
from pathlib import Path

from channels.dingtalk.emulator import EmulatorThread
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    DINGTALK_CLIENT_SECRET,
    dingtalk_emulator,
)
from tests.e2e_support import DaemonProcess

__all__ = ["dingtalk_emulator"]


def config(tmp_path: Path, emulator: EmulatorThread, b_interval: float, extra: str = "") -> Path:
    channels = "".join(
        f"""
[[channels]]
id = "{cid}"
type = "dingtalk"
client_id = "{DINGTALK_CLIENT_ID}"
client_secret = "{DINGTALK_CLIENT_SECRET}"
api_base = "{emulator.url}"
card_update_interval = {interval}
"""
        for cid, interval in (("a", 0.3), ("b", b_interval))
    )
    path = tmp_path / "channeld.toml"
    text = f'[daemon]\nstate_dir = "{tmp_path}"\n\n[admin]\nlisten = "127.0.0.1:0"\n'
    path.write_text(text + extra + channels, encoding="utf-8")
    return path


async def live_ids(emulator: EmulatorThread) -> set[str]:
    return {c.connection_id for c in await emulator.live_connections(DINGTALK_CLIENT_ID)}


async def test_sighup_restarts_only_what_changed(
    tmp_path: Path, dingtalk_emulator: EmulatorThread
) -> None:
    daemon = DaemonProcess(config(tmp_path, dingtalk_emulator, 0.3))
    await daemon.start()
    try:
        await daemon.wait_log("channel a: connected")
        await daemon.wait_log("channel b: connected")
        before = await live_ids(dingtalk_emulator)
        assert len(before) == 2

        config(tmp_path, dingtalk_emulator, 0.5)  # b changes, a does not
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.wait_log("configuration reloaded")
        after = await dingtalk_emulator.wait_for(
            lambda e: (
                ids
                if len(ids := {c.connection_id for c in e.live_connections(DINGTALK_CLIENT_ID)})
                == 2
                and ids != before
                else None
            ),
            10,
        )
        assert after is not None
        assert len(before & after) == 1  # a kept its connection, b got a new one

        # a broken file is refused and everything keeps running
        config(tmp_path, dingtalk_emulator, 0.5, extra="[agents.x]\ntype = 'nope'\n")
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.wait_log("reload refused")
        assert await live_ids(dingtalk_emulator) == after
    finally:
        assert await daemon.end(signal.SIGTERM) == 0
