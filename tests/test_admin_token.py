"""The generated admin token (loopback is never open; private file; never logged); guard rules."""

from __future__ import annotations

import io
import logging
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon import admin_token
from daemon.admin_guard import HostPolicy, is_json_utf8, same_origin
from daemon.app import Daemon
from daemon.config import ConfigurationError, default_state_dir, validate
from tests.e2e_support import FAST_BACKOFF


class TtyStream(io.StringIO):
    """What a terminal on stderr looks like to the daemon."""

    def isatty(self) -> bool:
        return True


def no_channels(state_dir: Path, **admin: Any) -> dict[str, Any]:
    return {
        "daemon": {"state_dir": str(state_dir), "log_level": "DEBUG", "graceful_timeout": 0},
        "admin": {"listen": "127.0.0.1:0", **admin},
        "agents": {"default": {"type": "echo"}},
        "channels": [],
    }


async def started(state_dir: Path, **admin: Any) -> Daemon:
    daemon = Daemon(validate(no_channels(state_dir, **admin)), backoff=FAST_BACKOFF)
    await daemon.start()
    return daemon


async def get_channels(daemon: Daemon, headers: dict[str, str]) -> int:
    assert daemon.admin is not None
    url = f"http://127.0.0.1:{daemon.admin.port}/api/v1/channels"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status


async def test_without_a_configured_token_one_is_generated_and_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    terminal = TtyStream()
    monkeypatch.setattr(sys, "stderr", terminal)
    daemon = await started(tmp_path)
    try:
        path = tmp_path / "admin.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        assert len(token) >= 32
        assert daemon.admin is not None and daemon.admin.token == token
        assert await get_channels(daemon, {}) == 401
        assert await get_channels(daemon, {"Authorization": "Bearer not-the-token"}) == 401
        assert await get_channels(daemon, {"Authorization": f"Bearer {token}"}) == 200
        # the path is logged, the token only shown to the operator's terminal, once
        assert str(path) in caplog.text
        assert token not in caplog.text
        url = f"http://127.0.0.1:{daemon.admin.port}/#token={token}"
        assert terminal.getvalue() == f"channeld admin page: {url}\n"
    finally:
        await daemon.stop()

    # a restart keeps the token: bookmarks, scripts and open pages keep working
    caplog.clear()
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)  # not a terminal: nothing printed
    again = await started(tmp_path)
    try:
        assert again.admin is not None and again.admin.token == token
        assert "generated" not in caplog.text
        assert stderr.getvalue() == ""
        assert await get_channels(again, {"Authorization": f"Bearer {token}"}) == 200
    finally:
        await again.stop()


async def test_a_configured_token_writes_no_file(tmp_path: Path) -> None:
    daemon = await started(tmp_path, token="configured-token")
    try:
        assert not (tmp_path / "admin.token").exists()
        assert await get_channels(daemon, {"Authorization": "Bearer configured-token"}) == 200
    finally:
        await daemon.stop()


@pytest.mark.parametrize("content", ["", "short", "has a space in it", "caf\u00e9-token-123"])
async def test_a_damaged_token_file_is_a_configuration_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "admin.token").write_text(content + "\n")
    daemon = Daemon(validate(no_channels(tmp_path)), backoff=FAST_BACKOFF)
    with pytest.raises(ConfigurationError, match=r"admin\.token"):
        await daemon.start()
    await daemon.stop()


def test_replicas_starting_together_share_one_token(tmp_path: Path) -> None:
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(admin_token.load_or_create(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({token for token, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["admin.token"]  # no scratch file left


def test_the_cli_finds_the_state_directory_the_daemon_uses(tmp_path: Path) -> None:
    config = tmp_path / "channeld.toml"
    config.write_text('[daemon]\nstate_dir = "${BASE}/state"\n[admin]\ntoken = "${UNSET}"\n')
    environ = {"BASE": str(tmp_path)}
    assert admin_token.configured_state_dir(config, environ) == tmp_path / "state"
    moved = {**environ, "CHANNELD_DAEMON__STATE_DIR": "/elsewhere"}
    assert admin_token.configured_state_dir(config, moved) == Path("/elsewhere")
    config.write_text("[daemon]\n")
    assert admin_token.configured_state_dir(config, {}) == default_state_dir()
    with pytest.raises(ConfigurationError, match="cannot read"):
        admin_token.configured_state_dir(tmp_path / "absent.toml", {})


# -- the rules, one by one -----------------------------------------------------------------------


def test_host_policy() -> None:
    loopback = HostPolicy("127.0.0.1", [])
    for host in ("localhost", "localhost:8787", "127.0.0.1", "127.3.2.1:1", "[::1]:8787"):
        assert loopback.allows(host, None), host
    for host in ("evil.example", "10.0.0.5:8787", "[::ffff:127.0.0.1]", "127.0.0.1:"):
        assert not loopback.allows(host, None), host

    # a listen address names itself, whatever port a proxy or NAT shows
    assert HostPolicy("10.1.2.3", []).allows("10.1.2.3:80", None)
    assert HostPolicy("admin.internal", []).allows("ADMIN.internal.:8787", None)
    assert HostPolicy("::1", []).allows("[::1]:1", None)
    assert HostPolicy("2001:db8::7", []).allows("[2001:DB8:0::7]:8787", None)
    # a wildcard listen answers the address a connection arrived on (a scrape or probe by IP)
    wildcard = HostPolicy("0.0.0.0", [])  # noqa: S104
    assert wildcard.allows("10.0.0.5:8787", "10.0.0.5")
    assert not wildcard.allows("10.0.0.5:8787", "10.0.0.6")
    assert not wildcard.allows("0.0.0.0:8787", "10.0.0.6")
    named = HostPolicy("0.0.0.0", ["channeld.prod:443", "metrics.prod"])  # noqa: S104
    assert named.allows("channeld.prod:443", None)
    assert not named.allows("channeld.prod", None)
    assert named.allows("metrics.prod:9", None)
    assert not named.allows("channeld.prod.evil.example", None)


def test_origin_and_media_type_rules() -> None:
    assert same_origin("http://127.0.0.1:8787", "127.0.0.1:8787")
    assert same_origin("https://Admin.Example", "admin.example")
    for origin in (
        "null",
        "http://127.0.0.1:8788",
        "http://127.0.0.1",
        "file://",
        "127.0.0.1:8787",
    ):
        assert not same_origin(origin, "127.0.0.1:8787"), origin
    assert not same_origin("http://127.0.0.1:8787", None)
    for ok in (
        "application/json",
        "Application/JSON; charset=UTF-8",
        'application/json;charset="utf8"',
    ):
        assert is_json_utf8(ok), ok
    for bad in ("text/plain", "application/json; charset=latin-1", "application/jsonx", ""):
        assert not is_json_utf8(bad), bad
