"""One error taxonomy for every remote call: providers, platform APIs and agents.

The supervisor decides retry versus stop from the class, the emitter decides fallback from it.
Messages must never contain secrets: classifiers build them from status codes and platform codes.
"""

from __future__ import annotations

import math

# The longest wait a remote may impose (Retry-After, x-ogw-ratelimit-reset, Feishu's
# ReconnectInterval, ReconnectNonce and PingInterval): a hostile or broken server must not park a
# channel for days. Ten minutes is far above the platforms' own values (Feishu's default
# ReconnectInterval is 120 s).
MAX_RETRY_AFTER = 600.0


def clamp_wait(seconds: float | None) -> float | None:
    """A remote's wait hint bounded to [0, MAX_RETRY_AFTER]; None when absent or not a number."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class ChannelError(Exception):
    """Base of every classified error."""

    retryable: bool = False


class TransientError(ChannelError):
    """Network trouble, timeouts, 5xx: try again later, no sooner than `retry_after` if given."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        # clamped here, where every platform's and agent's hint enters the taxonomy
        self.retry_after = clamp_wait(retry_after)


class RateLimited(TransientError):
    """The remote asked us to slow down; `retry_after` is its hint in seconds, if any."""


class AuthError(ChannelError):
    """Credentials rejected or permission missing: retrying will not help until edited."""


class ConfigError(ChannelError):
    """The configuration cannot work (missing template, bad URL...)."""


class PermanentError(ChannelError):
    """The request itself is wrong and will fail the same way again."""
