"""Emulators have no authentication: `[emulator] listen` and `emulate --listen` stay loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import EXIT_CONFIG_ERROR, ConfigurationError, load

# a bare port and an empty host bind every interface, like the wildcard addresses do
EXPOSED = ["18788", ":18788", "0.0.0.0:18788", "[::]:18788", "192.0.2.7:18788", "example.com:80"]
LOOPBACK = ["127.0.0.1:0", "127.0.0.2:18788", "localhost:18788", "[::1]:18788"]


def config(tmp_path: Path, listen: str) -> Path:
    path = tmp_path / "channeld.toml"
    path.write_text(f'[emulator]\nenabled = true\nlisten = "{listen}"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("listen", EXPOSED)
def test_config_refuses_an_emulator_beyond_loopback(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigurationError, match=r"emulator\.listen: .*loopback") as caught:
        load(config(tmp_path, listen), {})
    assert repr(listen) in str(caught.value)


@pytest.mark.parametrize("listen", LOOPBACK)
def test_config_accepts_loopback(tmp_path: Path, listen: str) -> None:
    assert load(config(tmp_path, listen), {}).emulator.listen == listen


@pytest.mark.parametrize(
    ("platform", "listen"),
    [
        ("dingtalk", "18788"),
        ("dingtalk", "0.0.0.0:18788"),
        ("feishu", "18788"),
        ("feishu", "0.0.0.0:18788"),
    ],
)
def test_emulate_refuses_a_listen_beyond_loopback(platform: str, listen: str) -> None:
    # before the check this served (forever) on every interface: the timeout would fail the test
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "emulate", platform, "--listen", listen],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    assert "--listen must be" in result.stderr
    assert "loopback" in result.stderr
    assert "listening" not in result.stdout
