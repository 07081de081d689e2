"""The admin token the daemon generates when `[admin] token` is not set.

It lives in `<state_dir>/admin.token` (mode 0600), created once and kept across restarts, so the
admin API is never open, not even on loopback: any local user and any web page the operator visits
can reach 127.0.0.1. `channeld channels` finds it there through the same state directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path

from daemon.config import ConfigurationError, default_state_dir, expand_variables

TOKEN_FILE = "admin.token"  # noqa: S105 (a file name, not a token)
STATE_DIR_ENV = "CHANNELD_DAEMON__STATE_DIR"


def token_path(state_dir: Path) -> Path:
    """Where the generated token lives."""
    return state_dir / TOKEN_FILE


def read_token(path: Path) -> str:
    """The token in the file; ConfigurationError when it cannot be read or is not a token."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not ASCII"
        raise ConfigurationError(f"cannot read the admin token file {path}: {why}") from None
    if len(token) < 8 or not token.isprintable() or " " in token:
        raise ConfigurationError(
            f"the admin token file {path} does not hold a token (8 or more printable ASCII "
            "characters): delete it to have a new one generated"
        )
    return token


def load_or_create(state_dir: Path) -> tuple[str, bool]:
    """The token in state_dir, generated on first use; also True when it was just created."""
    path = token_path(state_dir)
    if path.exists():
        return read_token(path), False
    token = secrets.token_urlsafe(32)
    # Written whole to a private file, then linked into place: link() fails if a replica starting
    # at the same moment won, and nobody ever reads a half-written token.
    scratch = state_dir / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        try:
            os.link(scratch, path)
        except FileExistsError:
            return read_token(path), False
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
    return token, True


def configured_state_dir(config: Path | None, environ: Mapping[str, str]) -> Path:
    """The state directory a daemon started with this config uses (for the CLI).

    Only `[daemon] state_dir` is read: the rest of the file may name variables (secrets) that the
    operator's shell does not have.
    """
    if environ.get(STATE_DIR_ENV):
        return Path(environ[STATE_DIR_ENV])
    if config is not None:
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"cannot read config file {config}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{config}: not valid TOML: {exc}") from None
        daemon = data.get("daemon")
        raw = daemon.get("state_dir") if isinstance(daemon, dict) else None
        if isinstance(raw, str) and raw:
            return Path(expand_variables(raw, environ, "daemon.state_dir"))
    return default_state_dir()


def configured_admin_url(config: Path | None) -> str | None:
    """The admin API a daemon started with this config serves, from its `[admin] listen` only
    (None: no config, or no listen there); a wildcard address is reached over loopback."""
    if config is None:
        return None
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None  # the token lookup reports an unreadable file; the default URL stays
    admin = data.get("admin")
    listen = admin.get("listen") if isinstance(admin, dict) else None
    if not isinstance(listen, str) or ":" not in listen:
        return None
    host, _, port = listen.rpartition(":")
    if host.strip("[]") in ("0.0.0.0", "::", ""):  # noqa: S104 - recognising, not binding
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def login_url(host: str, port: int, token: str) -> str:
    """The page's address with the token in the fragment (never sent to the server or logged)."""
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/#token={token}"
