"""Where the secret key comes from, and that sealed secrets round-trip only with it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from aiohttp import ClientSession
from cryptography.fernet import Fernet

from daemon.admin import AdminServer
from daemon.config import AdminSection
from daemon.secrets import CREDENTIAL_NAME, KEY_ENV, SecretBox, SecretKeyError, load_key


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
