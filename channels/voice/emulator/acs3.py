"""Alibaba Cloud's V3 request signature (`ACS3-HMAC-SHA256`), as the official SDK computes it.

Written from the algorithm in `alibabacloud-tea-openapi` 0.4.6 (`utils.get_authorization`, the
signer `alibabacloud-ice20201109==6.20.2` uses): the canonical request is the method, the path,
the query (keys sorted, values percent-encoded leaving only `~` unescaped), every signed header
as `name:value` (lowercase name, trimmed value, sorted), the signed header names joined by `;`,
and the hex sha256 of the body; the string to sign is the algorithm's name and the hex sha256 of
the canonical request; the signature is the hex HMAC-SHA256 of it under the AccessKey secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "ACS3-HMAC-SHA256"
# the common headers Alibaba requires among the signed ones when they are sent
REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
)
_AUTHORIZATION = re.compile(
    rf"{ALGORITHM} Credential=(?P<key>[^,\s]+),SignedHeaders=(?P<headers>[^,\s]+),"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of an `Authorization: ACS3-HMAC-SHA256 ...` header."""

    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse(header: str) -> Authorization | None:
    """The header's parts; None when it is not a well-formed V3 authorization."""
    match = _AUTHORIZATION.fullmatch(header.strip())
    if match is None:
        return None
    names = tuple(match["headers"].split(";"))
    if list(names) != sorted(names) or any(n != n.lower() or not n for n in names):
        return None
    return Authorization(match["key"], names, match["signature"])


def canonical_query(query: Mapping[str, str]) -> str:
    """`k=v&...` with sorted keys and the SDK's encoding of values."""
    return "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))


def signature(
    secret: str,
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    payload_sha256: str,
) -> str:
    """The hex signature of a request (`headers` looked up by lowercase name)."""
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in signed_headers)
    canonical = "\n".join(
        [
            method.upper(),
            path or "/",
            canonical_query(query),
            canonical_headers,
            ";".join(signed_headers),
            payload_sha256,
        ]
    )
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
