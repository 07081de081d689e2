"""The "ldap" directory: a search in the organisation's LDAP server (OpenLDAP, Active Directory),
with the `ldap3` client (2.9.1) in a worker thread: its synchronous calls must not hold the loop.

`ldap_filter` names the sender's details as placeholders: `{email}`, `{employee_no}`, `{user_id}`,
`{name}`, `{mobile}`, `{platform}`, `{tenant}`. Every value is escaped per RFC 4515 (`\\`, `*`,
`(`, `)` and NUL become `\\5c`, `\\2a`, `\\28`, `\\29`, `\\00`), so a display name such as
`*)(uid=*` is a literal string to match, never filter syntax; an unknown (empty) value becomes
`\\00`, which matches no entry, so `(|(mail={email})(employeeNumber={employee_no}))` still finds a
sender whose platform gave only the employee number. The entry found is the person: directory id
its DN, name its `displayName` (else `cn`), e-mail its `mail`, groups the values of
`ldap_groups_attribute` as the server gives them (DNs for `memberOf`). No entry is nobody; more
than one is an error (the filter must name one person).

The bind password travels only over ldaps:// or after StartTLS (certificates verified), except to a
loopback host.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import math
import socket
import ssl
import string
import threading
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_errors

from channels import normalize
from channels.users.directory import DirectoryError, Person, Who
from common.endpoint import is_loopback
from common.errors import ConfigError
from common.redact import scrub

log = logging.getLogger(__name__)

PLACEHOLDERS = frozenset(
    {"email", "employee_no", "user_id", "name", "mobile", "platform", "tenant"}
)
NOBODY = "\\00"  # an escaped NUL: no directory value holds one, and Who never carries one
MAX_GROUPS = 100
_SPECIAL = {"\\": "\\5c", "*": "\\2a", "(": "\\28", ")": "\\29", "\x00": "\\00"}


def escape(value: str) -> str:
    """`value` as an RFC 4515 assertion value: filter metacharacters escaped, nothing else."""
    return "".join(_SPECIAL.get(ch, ch) for ch in value)


def _placeholders(template: str) -> frozenset[str]:
    """The placeholders `template` uses; ConfigError for anything but bare known names."""
    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"users ldap_filter: {exc} (write a literal brace as {{{{ or }}}})"
        ) from exc
    for _text, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ConfigError(
                f"users ldap_filter: unknown placeholder {{{field}}}; use "
                + ", ".join(f"{{{name}}}" for name in sorted(PLACEHOLDERS))
            )
        used.add(field)
    if not used:
        raise ConfigError("users ldap_filter names no placeholder: it would match everyone alike")
    if not (template.startswith("(") and template.endswith(")")):
        raise ConfigError("users ldap_filter must be one parenthesised filter, like (mail={email})")
    return frozenset(used)


class _VerifiedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 is untyped: Tls is Any to mypy
    """TLS with Python's own certificate and host name checks.

    ldap3 2.9.1 turns the context's host name check off and calls `ssl.match_hostname`, which
    Python 3.12 removed (3.11 warns); here the handshake itself verifies the certificate chain and
    that it names the host in `ldap_url`, and sends that name as SNI.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        """ldap3's hook: `connection.socket` wrapped, on connect (ldaps) or after StartTLS."""
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=connection.server.host,
        )


def _unwrapped(text: str) -> str:
    """An ldap3 error's text without the tuple reprs it wraps a socket error's text in."""
    text = text[:1000]
    for _ in range(3):
        if not text.startswith(("(", "[")):
            break
        try:
            value = ast.literal_eval(text)  # literals only: nothing is executed
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            break
        if not (isinstance(value, tuple | list) and value and isinstance(value[0], str)):
            break
        text = value[0]
    return text


def _unbind(connection: Any) -> None:
    try:
        connection.unbind()
    except (ldap_errors.LDAPException, OSError):
        log.debug("LDAP unbind failed on a connection already broken")
    # ldap3 2.9.1 keeps the socket of a connect that failed and never closes it (the connection
    # counts as closed already); closing a socket twice is harmless
    sock = getattr(connection, "socket", None)
    if isinstance(sock, socket.socket):
        sock.close()


def _first(values: Any) -> str:
    if isinstance(values, list):
        values = values[0] if values else ""
    return values if isinstance(values, str) else ""


class LdapDirectory:
    """People found by a search in the organisation's LDAP directory."""

    source = "ldap"

    def __init__(
        self,
        url: str,
        *,
        bind_dn: str,
        bind_password: str,
        base_dn: str,
        filter: str,  # the config key's name (ldap_filter)
        groups_attribute: str = "memberOf",
        timeout: float = 5.0,
        ca_file: str | None = None,  # PEM CA bundle for a private CA; default: the system's
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ConfigError("users ldap_url must be ldaps://host[:port] or ldap://host[:port]")
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
            raise ConfigError("users ldap_url takes only a scheme, host and port")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError("users ldap_url: the port must be a number from 1 to 65535") from exc
        self._filter = filter
        self._placeholders = _placeholders(filter)
        self._host = parts.hostname
        # plain LDAP only to loopback (a test server, a local proxy); elsewhere StartTLS first
        self.start_tls = parts.scheme == "ldap" and not is_loopback(parts.hostname)
        try:
            tls = _VerifiedTls(ssl.create_default_context(cafile=ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"users ldap CA file {ca_file}: {exc}") from exc
        self._server = ldap3.Server(
            parts.hostname,
            port=port,
            use_ssl=parts.scheme == "ldaps",
            tls=tls,
            get_info=ldap3.NONE,  # no schema read: one round trip less, and filters stay ours
            connect_timeout=timeout,
        )
        self._bind_dn = bind_dn
        self._password = bind_password
        self._base_dn = base_dn
        self._groups_attribute = groups_attribute
        self._timeout = timeout
        self._connection: Any = None  # ldap3.Connection, opened on first use, reused
        # one request at a time on the one connection: the asyncio lock queues callers without
        # holding worker threads; the thread lock still holds when a caller was cancelled while
        # its thread went on (a thread cannot be cancelled)
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    def filter_for(self, who: Who) -> str | None:
        """The search filter for `who`; None when every value it names is unknown."""
        values = {
            "email": who.email,
            "employee_no": who.employee_no,
            "user_id": who.user_id,
            "name": who.name,
            "mobile": who.mobile,
            "platform": who.platform,
            "tenant": who.tenant,
        }
        if not any(values[name] for name in self._placeholders):
            return None
        return self._filter.format_map({k: escape(v) if v else NOBODY for k, v in values.items()})

    async def lookup(self, who: Who) -> Person | None:
        """The one entry the filter finds for `who`; None when it finds none."""
        search_filter = self.filter_for(who)
        if search_filter is None:
            return None
        async with self._lock:
            entries = await asyncio.to_thread(self._search, search_filter)
        if not entries:
            return None
        if len(entries) > 1:
            raise DirectoryError(
                f"the LDAP filter found {len(entries)} entries for one sender: it must name one"
            )
        return self._person(entries[0])

    def _connect(self) -> Any:
        # ldap3 skips an address that failed in the last 5 s ("invalid server address"): each
        # lookup tries the server again, so a restarted directory answers the next sender
        self._server.reset_availability()
        connection = ldap3.Connection(
            self._server,
            user=self._bind_dn or None,
            password=self._password or None,
            raise_exceptions=True,
            # whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer
            receive_timeout=max(1, math.ceil(self._timeout)),
            auto_referrals=False,  # a referral would send the bind password to another host
        )
        try:
            connection.open()
            if self.start_tls:
                connection.start_tls()
            connection.bind()
        except BaseException:
            _unbind(connection)  # the socket is closed whatever failed
            raise
        return connection

    def _search(self, search_filter: str) -> list[dict[str, Any]]:
        """Runs in a worker thread: one search, reconnecting once when a kept connection broke
        (the server restarted, an idle timeout closed it)."""
        with self._thread_lock:
            return self._search_once_or_twice(search_filter)

    def _search_once_or_twice(self, search_filter: str) -> list[dict[str, Any]]:
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                if self._connection is None:
                    self._connection = self._connect()
                self._connection.search(
                    self._base_dn,
                    search_filter,
                    search_scope=ldap3.SUBTREE,
                    attributes=["displayName", "cn", "mail", self._groups_attribute],
                    size_limit=2,
                    time_limit=max(1, math.ceil(self._timeout)),
                )
                return [e for e in self._connection.response if e.get("type") == "searchResEntry"]
            except ldap_errors.LDAPSizeLimitExceededResult:
                return [{}, {}]  # more than one: the caller says so
            except ldap_errors.LDAPException as exc:
                self._drop()
                broke = isinstance(exc, ldap_errors.LDAPCommunicationError)
                if not (reused and broke and attempt == 1):
                    raise DirectoryError(self._describe(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe(self, exc: Exception) -> str:
        text = scrub(_unwrapped(str(exc)), [self._password])[:200]
        return f"the LDAP directory at {self._host} failed: {type(exc).__name__}: {text}"

    def _person(self, entry: dict[str, Any]) -> Person:
        attributes = entry.get("attributes") or {}
        dn = entry.get("dn")
        if not isinstance(dn, str) or not dn:
            raise DirectoryError("the LDAP directory answered an entry without a DN")
        name = _first(attributes.get("displayName")) or _first(attributes.get("cn")) or dn
        groups = attributes.get(self._groups_attribute) or []
        if not isinstance(groups, list):
            groups = [groups]
        return Person(
            directory_id="ldap:" + normalize.platform_id(dn),
            name=normalize.name(name),
            email=normalize.clean(_first(attributes.get("mail")))[:320],
            groups=tuple(dict.fromkeys(normalize.name(g) for g in groups if isinstance(g, str)))[
                :MAX_GROUPS
            ],
        )

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            _unbind(connection)

    async def aclose(self) -> None:
        """Unbinds the connection, if one is open."""
        async with self._lock:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._thread_lock:
            self._drop()
