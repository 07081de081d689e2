"""Settings that decide where a secret is sent, checked the same way for channels and agents."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# Marks a setting that decides where a channel's or an agent's secrets are sent
# (`json_schema_extra`): the admin API changes it only when the secrets are given again in the same
# request, and the OpenAPI document shows the mark to clients.
SENDS_SECRETS = "x-sends-secrets"

_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
# RFC 3986 path characters; `?` and `#` are refused before this is checked
_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


def http_base_url(value: str) -> str:
    """An http(s) base URL rebuilt from scheme, host, optional port and path; nothing else.

    Request paths are appended to it, so a query, a fragment or userinfo would change where a
    request (and the secret it carries) goes: those are refused, not repaired.
    """
    if "?" in value or "#" in value:
        raise ValueError(
            "must not contain '?' or '#': request paths are appended to this URL, and a query "
            "or fragment would swallow them"
        )
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in value):
        raise ValueError("must not contain spaces, control characters or backslashes")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not value.lower().startswith(parts.scheme + "://"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not contain user:password@ (userinfo)")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError("the port must be a number from 1 to 65535")
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
    elif not _HOST.fullmatch(host):
        raise ValueError("must name a host (letters, digits, '-', '_' and '.'; IDNs in punycode)")
    if not _PATH.fullmatch(parts.path):
        raise ValueError("the path may contain only URL path characters (percent-encode others)")
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def https_unless_loopback(value: str) -> str:
    """`http_base_url`, and https unless the host is a loopback one (an emulator): for a cloud
    API that receives an app's secret or tokens, which plain http would show to the network."""
    url = http_base_url(value)
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ValueError(
            "must be an https:// URL (http only for a loopback host, such as an emulator): "
            "the app's secret and tokens travel on this connection"
        )
    return url


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback name or address: it never leaves this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
