"""Host names as HTTP carries them (`Host`, `Origin`) and as `[admin] allowed_hosts` lists them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# DNS labels as browsers send them (IDNs arrive in punycode); `_` for internal names
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class HostPort:
    """A host (lower case, no trailing dot, IPv6 without brackets) and an optional port."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """`localhost`, 127.0.0.0/8 or ::1: names no other machine and no DNS answer can claim."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _port(text: str) -> int | None:
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise ValueError(text)
    return int(text)


def parse_host(value: str) -> HostPort | None:
    """`name`, `name:port`, `192.0.2.1:port` or `[2001:db8::1]:port`; None for anything else."""
    # checked before lower(): some non-ASCII letters lower-case to ASCII ones (K, the Kelvin sign)
    if not value.isascii():
        return None
    text = value.lower()
    try:
        if text.startswith("["):
            inside, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                return None
            host = ipaddress.IPv6Address(inside).compressed
            return HostPort(host, _port(rest[1:]) if rest else None)
        name, colon, port = text.partition(":")
        name = name.removesuffix(".")
        if not _NAME.fullmatch(name):
            return None
        return HostPort(name, _port(port) if colon else None)
    except ValueError:
        return None


def normalise_ip(address: str) -> str | None:
    """An address as a socket reports it, in the form parse_host gives (IPv4-mapped unwrapped)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed
