"""ZEGO's two signatures, shared by the ZIM server API and the AI Agent server API.

A call to either server API carries `AppId`, a fresh 16-hex-digit `SignatureNonce`, `Timestamp`
(Unix seconds), `SignatureVersion` 2.0 and `Signature = md5(AppId + SignatureNonce + ServerSecret
+ Timestamp)` in its query (docs/platforms/zim.md §2, docs/platforms/voice.md §1.2). A callback
from either product carries `sha1` of its secret, timestamp and nonce, sorted as strings and
joined (zim.md §1.2, voice.md §1.4).
"""

from __future__ import annotations

import hashlib
import secrets

from channels.callbacks import signed_bytes


def api_signature(app_id: int, nonce: str, secret: str, timestamp: int) -> str:
    """`Signature` of a server API call: md5 of AppId, nonce, ServerSecret and timestamp."""
    return hashlib.md5(f"{app_id}{nonce}{secret}{timestamp}".encode()).hexdigest()  # noqa: S324 - ZEGO's scheme


def signed_query(action: str, app_id: int, secret: str, timestamp: int) -> dict[str, str]:
    """The query of one server API call: the action and the common parameters, freshly signed."""
    nonce = secrets.token_hex(8)
    return {
        "Action": action,
        "AppId": str(app_id),
        "SignatureNonce": nonce,
        "Timestamp": str(timestamp),
        "SignatureVersion": "2.0",
        "Signature": api_signature(app_id, nonce, secret, timestamp),
    }


def callback_signature(secret: str, timestamp: str, nonce: str) -> str:
    """A callback's signature: sha1 of the secret, timestamp and nonce, sorted and joined."""
    joined = "".join(sorted([secret, timestamp, nonce]))
    return hashlib.sha1(signed_bytes(joined)).hexdigest()  # noqa: S324 - ZEGO's scheme
