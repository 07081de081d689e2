"""One secret scrubber for every error text that may reach a log, the admin API or a user."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

MASK = "***"
_NAME = r"(?:secret|token|ticket|session|password|signature|authorization)\w*"
# `name=value` (query strings: DingTalk's sessionWebhook carries `session=`), `"name": "value"`
# (an echoed JSON body) and `Bearer value`, where the name says credential
_CREDENTIAL = re.compile(
    rf"(?i)({_NAME}=|{_NAME}[\"']\s*:\s*[\"'](?:bearer\s+)?|bearer\s+)[^\s\"'&,;}}]+"
)
# API keys by their usual prefixes (OpenAI's `sk-...`, many proxies' `key-...`)
_KEY_LIKE = re.compile(r"\b(sk|key)-[A-Za-z0-9_\-]{6,}")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret value and anything shaped like a credential masked."""
    for value in secrets:
        if value:
            text = text.replace(value, MASK)
    text = _CREDENTIAL.sub(rf"\1{MASK}", text)
    return _KEY_LIKE.sub(rf"\1-{MASK}", text)


class Scrubber:
    """Masks a client's secret and the tokens and tickets it was handed since."""

    def __init__(self, secret: str, *, remember: int = 16) -> None:
        self._secret = secret
        # recent credentials only: older ones have expired, and the list must not grow
        self._seen: deque[str] = deque(maxlen=remember)

    def remember(self, credential: str) -> None:
        """Masks `credential` from now on, like the secret."""
        self._seen.append(credential)

    def __call__(self, text: str) -> str:
        """`text` with the secret, the remembered credentials and credential shapes masked."""
        return scrub(text, (self._secret, *self._seen))
