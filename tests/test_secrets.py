"""Where the secret key comes from, and that sealed secrets round-trip only with it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from cryptography.fernet import Fernet
from pydantic import SecretStr

from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import EmulatorThread
from channels.manager import spec_digest
from daemon.admin import AdminServer
from daemon.app import Daemon
from daemon.config import EXIT_CONFIG_ERROR, AdminSection, Settings, validate
from daemon.secrets import CREDENTIAL_NAME, KEY_ENV, SecretBox, SecretKeyError, load_key
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF

__all__ = ["dingtalk_emulator"]


def test_first_run_generates_a_private_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    key = load_key(tmp_path)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(tmp_path) == key  # stable across restarts
    box = SecretBox(key)
    sealed = box.seal("s3cret")
    assert "s3cret" not in sealed
    assert box.open(sealed) == "s3cret"
    with pytest.raises(SecretKeyError):
        SecretBox(Fernet.generate_key()).open(sealed)


def test_env_and_systemd_credential_take_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential_key = Fernet.generate_key()
    (tmp_path / CREDENTIAL_NAME).write_bytes(credential_key + b"\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert load_key(tmp_path / "state") == credential_key
    env_key = Fernet.generate_key()
    monkeypatch.setenv(KEY_ENV, env_key.decode())
    assert load_key(tmp_path / "state") == env_key
    assert not (tmp_path / "state" / "secret.key").exists()


def test_a_bad_key_is_a_clear_error() -> None:
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        SecretBox(b"too-short")


async def test_readyz_is_503_until_ready(tmp_path: Path) -> None:
    ready = False

    async def readiness() -> bool:
        return ready

    server = AdminServer(AdminSection(listen="127.0.0.1:0"), readiness, state_dir=tmp_path)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        async with ClientSession() as http:
            async with http.get(url + "/readyz") as response:
                assert response.status == 503
            ready = True
            async with http.get(url + "/readyz") as response:
                assert response.status == 200
            async with http.get(url + "/healthz") as response:
                assert response.status == 200
    finally:
        await server.stop()


# -- a changed or lost key (issue 10 #4) and the keyed change digest (#12) ---------------------

TOKEN = "admin-token-keys"
UNREADABLE = (
    "the stored secret does not decrypt with the current key; "
    "restore the key or re-enter the secret"
)


@pytest.fixture
def key_from_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key comes from <state_dir>/secret.key, as on a host without systemd."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def daemon_settings(state: Path, channels: list[dict[str, Any]]) -> Settings:
    return validate(
        {
            "daemon": {"state_dir": str(state), "graceful_timeout": 0},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "agents": {"default": {"type": "echo", "delay": 0.01}},
            "channels": channels,
        }
    )


def dingtalk(channel_id: str, api_base: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": channel_id,
        "type": "dingtalk",
        "client_id": DINGTALK_CLIENT_ID,
        "client_secret": DINGTALK_CLIENT_SECRET,
        "api_base": api_base,
        **extra,
    }


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Daemon, ApiClient]]:
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        assert daemon.admin is not None and daemon.admin.port is not None
        async with ClientSession() as http:
            yield daemon, ApiClient(http, daemon.admin.port)
    finally:
        await daemon.stop()


class ApiClient:
    """Bearer-token JSON calls to the admin API."""

    def __init__(self, http: ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{port}/api/v1/channels"

    async def call(self, method: str, path: str = "", body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def states(self, **wanted: str) -> dict[str, dict[str, Any]]:
        """Waits until every named channel is in the wanted state; returns their statuses."""
        async with asyncio.timeout(10):
            while True:
                _, body = await self.call("GET")
                statuses = {c["id"]: c["status"] for c in body["channels"]}
                if all(statuses[cid]["state"] == state for cid, state in wanted.items()):
                    return statuses
                await asyncio.sleep(0.02)


async def test_a_replaced_key_fails_only_the_channels_it_cannot_open(
    tmp_path: Path, dingtalk_emulator: EmulatorThread, key_from_state_dir: None
) -> None:
    url = dingtalk_emulator.url
    settings = daemon_settings(tmp_path, [dingtalk("dt", url)])
    async with running(settings) as (_, api):
        for cid in ("api-1", "api-2"):
            assert (await api.call("POST", "", dingtalk(cid, url)))[0] == 201
        await api.states(dt="connected", **{"api-1": "connected", "api-2": "connected"})

    # the key is replaced (a restored host without its old key file, say)
    (tmp_path / "secret.key").write_bytes(Fernet.generate_key() + b"\n")
    async with running(settings) as (_, api):
        statuses = await api.states(dt="connected", **{"api-1": "failed", "api-2": "failed"})
        for cid in ("api-1", "api-2"):
            assert statuses[cid]["last_error"] == f"ConfigError: client_secret: {UNREADABLE}"
        # the API still serves the channel, and will not edit it on a secret it cannot read
        status, body = await api.call("PATCH", "/api-1", {"idle_reset_minutes": 30})
        assert status == 409, body
        assert body["error"]["code"] == "secret_required"
        assert "does not decrypt" in body["error"]["message"]
        status, body = await api.call("PATCH", "/api-1", {"client_secret": DINGTALK_CLIENT_SECRET})
        assert status == 200, body
        await api.states(dt="connected", **{"api-1": "connected", "api-2": "failed"})

    # re-entered under the new key, it stays good; the other keeps failing alone
    async with running(settings) as (_, api):
        statuses = await api.states(dt="connected", **{"api-1": "connected", "api-2": "failed"})
        assert UNREADABLE in statuses["api-2"]["last_error"]


async def test_a_lost_key_with_sealed_secrets_exits_11_with_advice(
    tmp_path: Path, key_from_state_dir: None
) -> None:
    async with running(daemon_settings(tmp_path, [])) as (_, api):
        # enabled: a daemon that made a fresh key would crash on it (exit 1) rather than run on
        body = dingtalk("api-1", "http://127.0.0.1:9")
        assert (await api.call("POST", "", body))[0] == 201
    key = tmp_path / "secret.key"
    key.unlink()
    config = tmp_path / "channeld.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n\n[admin]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "CREDENTIALS_DIRECTORY")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "run",
        "--config",
        str(config),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    message = err.decode()
    assert process.returncode == EXIT_CONFIG_ERROR, message
    assert "api-1" in message
    assert f"Restore {key}" in message
    assert KEY_ENV in message
    assert not key.exists()  # no fresh key that would have orphaned the sealed secrets


def test_the_change_digest_is_keyed() -> None:
    key = SecretBox(Fernet.generate_key()).derive("spec-digest")
    first = DingTalkChannelConfig(id="d", client_id="c", client_secret="s3cret-one")
    second = first.model_copy(update={"client_secret": SecretStr("s3cret-two")})
    assert spec_digest(first, key) == spec_digest(first, key)
    assert spec_digest(first, key) != spec_digest(second, key)
    assert spec_digest(first, key) != spec_digest(first, os.urandom(32))
    # what a plain hash over the settings (secrets included) would be: guessable offline
    plain = {
        k: (v.get_secret_value() if isinstance(v, SecretStr) else v)
        for k, v in first.model_dump().items()
    }
    unsalted = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    assert unsalted not in spec_digest(first, key)


async def test_the_stored_digest_is_not_a_plain_hash(
    tmp_path: Path, key_from_state_dir: None
) -> None:
    channel = dingtalk("dt", "http://127.0.0.1:9", enabled=False)
    async with running(daemon_settings(tmp_path, [channel])) as (daemon, _):
        assert daemon.store is not None
        record = await daemon.store.get_channel("dt")
        assert record is not None
    config = DingTalkChannelConfig.model_validate(channel)
    plain = {
        k: (v.get_secret_value() if isinstance(v, SecretStr) else v)
        for k, v in config.model_dump().items()
    }
    unsalted = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()
    stored = json.dumps(record.spec)
    assert record.spec["digest"].startswith("hmac-sha256:")
    assert unsalted not in stored
    assert DINGTALK_CLIENT_SECRET not in stored
