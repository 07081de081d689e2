"""Secrets at rest: Fernet-encrypted in the database, the key kept outside it.

The key comes from, in order: `CHANNELD_SECRET_KEY` (the key itself), the systemd credential
`channeld-secret-key` (`LoadCredential=`), `[daemon] secret_key_file`, or `<state_dir>/secret.key`,
which is generated with mode 0600 on first run, and only then: a database that already holds
sealed secrets never gets a fresh key (it could not open them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from daemon.config import ConfigurationError

log = logging.getLogger(__name__)

KEY_ENV = "CHANNELD_SECRET_KEY"
CREDENTIAL_NAME = "channeld-secret-key"
MASK = "***"


class SecretKeyError(ConfigurationError):
    """The key is missing, unreadable or does not decrypt what the database holds (exit 11)."""


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot read secret key file {path}: {exc.strerror}") from None


def _missing_key_advice(path: Path, sealed: Sequence[str]) -> str:
    return (
        f"no secret key found, but the database holds secrets sealed with one (API channels: "
        f"{', '.join(sealed)}); a new key could not open them, so none is generated. Restore "
        f"{path} from the backup taken with the database, or give the key in {KEY_ENV} or the "
        f"systemd credential {CREDENTIAL_NAME}. To give those secrets up instead, write a new "
        f"key yourself (umask 077; python3 -c 'from cryptography.fernet import Fernet; "
        f"print(Fernet.generate_key().decode())' > {path}), start, and re-enter each of those "
        f"channels' secrets (channeld channels edit) or delete and re-create them"
    )


def load_key(state_dir: Path, key_file: Path | None = None, *, sealed: Sequence[str] = ()) -> bytes:
    """Find the key (see module docstring); create it in state_dir when none exists.

    `sealed`: ids of the channels whose secrets the database holds sealed; when there are any,
    a missing key is an error with recovery advice, never a fresh key.
    """
    env_key = os.environ.get(KEY_ENV)
    if env_key:
        return env_key.encode()
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).exists():
        return _read_key(Path(credentials) / CREDENTIAL_NAME)
    if key_file is not None:
        return _read_key(key_file)
    path = state_dir / "secret.key"
    if path.exists():
        return _read_key(path)
    if sealed:
        raise SecretKeyError(_missing_key_advice(path, sealed))
    key = Fernet.generate_key()
    # O_EXCL: two replicas starting at once must not overwrite each other's fresh key
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    log.info("generated a new secret key at %s (mode 0600); back it up with the database", path)
    return key


class SecretBox:
    """Encrypts and decrypts channel secrets."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise SecretKeyError("the secret key is not a valid Fernet key") from None
        self._raw = base64.urlsafe_b64decode(key)

    def derive(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. an HMAC), derived from this key; reveals nothing of it."""
        return hmac.new(self._raw, b"channeld:" + purpose.encode(), hashlib.sha256).digest()

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret does not decrypt with the current key") from None
