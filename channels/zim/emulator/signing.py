"""ZIM's two signatures: server API requests (md5) and callbacks to the app's server (sha1)."""

from __future__ import annotations

import hashlib


def api_signature(app_id: str | int, nonce: str, server_secret: str, timestamp: str | int) -> str:
    """`md5(AppId + SignatureNonce + ServerSecret + Timestamp)`, lowercase hex."""
    text = f"{app_id}{nonce}{server_secret}{timestamp}"
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - ZIM's scheme, not our choice


def callback_signature(callback_secret: str, timestamp: str | int, nonce: str) -> str:
    """sha1 of the secret, the timestamp and the nonce sorted as strings and joined, hex."""
    parts = sorted([callback_secret, str(timestamp), nonce])
    return hashlib.sha1("".join(parts).encode()).hexdigest()  # noqa: S324 - ZIM's scheme
