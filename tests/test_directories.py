"""The user directories: the file one, the HTTP one against a loopback fake, the LDAP one against a
real slapd on loopback (skipped, saying why, where Debian's slapd is not installed)."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels.users.directory import DirectoryError, Person, Who
from channels.users.file import FileDirectory
from channels.users.http import HttpDirectory
from channels.users.ldap import LdapDirectory, escape
from common.errors import ConfigError

USERS_TOML = """\
[[users]]
name = "Ada Lovelace"
email = "ada@example.com"
groups = ["engineering", "admins"]
identities = [{platform = "dingtalk", user_id = "0612345"},
              {platform = "feishu", user_id = "ou_7d8a6e", tenant = "tenant-a"}]

[[users]]
name = "Grace Hopper"
identities = [{platform = "wukongim", user_id = "grace"}]
"""


def test_who_never_carries_surrogates_or_controls() -> None:
    who = Who("feishu", "t\x00", "ou_1\ud800", name="Eve\x00\ud800", email="e\x1b@x.org")
    assert who.name == "Eve\ufffd"
    assert who.email == "e@x.org"
    assert "\x00" not in who.tenant and "\ud800" not in who.user_id


def _users_file(tmp_path: Path, text: str = USERS_TOML) -> Path:
    path = tmp_path / "users.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_file_identities_on_two_platforms_are_one_person(tmp_path: Path) -> None:
    directory = FileDirectory(_users_file(tmp_path))
    on_dingtalk = await directory.lookup(Who("dingtalk", "corp-1", "0612345"))
    on_feishu = await directory.lookup(Who("feishu", "tenant-a", "ou_7d8a6e", name="Ada L."))
    assert (
        on_dingtalk
        == on_feishu
        == Person(
            directory_id="file:ada@example.com",
            name="Ada Lovelace",
            email="ada@example.com",
            groups=("engineering", "admins"),
        )
    )
    grace = await directory.lookup(Who("wukongim", "", "grace"))
    assert grace == Person(directory_id="file:Grace Hopper", name="Grace Hopper")
    assert directory.source == "file"


async def test_file_identity_with_a_tenant_matches_only_that_tenant(tmp_path: Path) -> None:
    directory = FileDirectory(_users_file(tmp_path))
    assert await directory.lookup(Who("feishu", "tenant-b", "ou_7d8a6e")) is None
    assert await directory.lookup(Who("dingtalk", "0612345", "someone-else")) is None
    assert await directory.lookup(Who("feishu", "tenant-a", "0612345")) is None


async def test_file_finds_a_person_by_email_when_the_identity_is_not_listed(
    tmp_path: Path,
) -> None:
    directory = FileDirectory(_users_file(tmp_path))
    found = await directory.lookup(Who("zim", "", "ada-z", email="ADA@example.com"))
    assert found is not None and found.directory_id == "file:ada@example.com"
    assert await directory.lookup(Who("zim", "", "ada-z", email="other@example.com")) is None


async def test_file_reload_reads_changes_and_keeps_the_previous_file_when_bad(
    tmp_path: Path,
) -> None:
    path = _users_file(tmp_path)
    directory = FileDirectory(path)
    path.write_text(
        USERS_TOML.replace('groups = ["engineering", "admins"]', 'groups = ["research"]')
        + '\n[[users]]\nname = "Linus"\nidentities = [{platform = "zim", user_id = "lt"}]\n',
        encoding="utf-8",
    )
    directory.reload()
    ada = await directory.lookup(Who("dingtalk", "", "0612345"))
    assert ada is not None and ada.groups == ("research",)
    assert await directory.lookup(Who("zim", "", "lt")) is not None

    path.write_text(USERS_TOML + "\n[[users]\nname = 'broken'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 12"):
        directory.reload()
    # the previous file still answers
    assert await directory.lookup(Who("zim", "", "lt")) is not None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            USERS_TOML + '\n[[users]]\nname = "Imposter"\n'
            'identities = [{platform = "dingtalk", user_id = "0612345"}]\n',
            r"users entry 3 \(line 12\), 'Imposter': identity dingtalk:0612345 already belongs "
            r"to 'Ada Lovelace'",
        ),
        (
            USERS_TOML + '\n[[users]]\nname = "Ada Again"\nemail = "ada@example.com"\n',
            r"users entry 3 \(line 12\).*listed twice",
        ),
        (
            USERS_TOML + '\n[[users]]\nname = "Typo"\nemial = "t@example.com"\n',
            r"users entry 3 \(line 12\), 'Typo', emial: Extra inputs are not permitted",
        ),
        (
            '[[users]]\nname = "No platform"\nidentities = [{user_id = "x"}]\n',
            r"users entry 1 \(line 1\), 'No platform', identities.0.platform: Field required",
        ),
    ],
)
def test_file_that_contradicts_itself_is_refused_naming_the_entry(
    tmp_path: Path, text: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        FileDirectory(_users_file(tmp_path, text))


def test_file_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        FileDirectory(tmp_path / "missing.toml")


class FakeDirectoryServer:
    """An organisation's lookup service on loopback: people by user id, scripted faults."""

    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.faults: list[str] = []  # consumed one per request: "500", "429", "stall", "garbage"...
        self.requests: list[dict[str, Any]] = []
        self.redirected: list[str] = []
        self.release = asyncio.Event()  # ends every stalled request
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/im-lookup", self._lookup)
        app.router.add_post("/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/im-lookup"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _lookup(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        fault = self.faults.pop(0) if self.faults else ""
        if fault == "stall":
            await self.release.wait()
        if fault in ("500", "503", "429", "401", "403"):
            return web.json_response({"error": fault}, status=int(fault))
        if fault == "garbage":
            return web.Response(text="<html>Bad gateway</html>", content_type="text/html")
        if fault == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        if fault.startswith(("{", "[")):
            return web.Response(text=fault, content_type="application/json")
        person = self.people.get(self.requests[-1]["user_id"])
        if person is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"user": person})

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.redirected.append(await request.text())
        return web.json_response({"user": {"id": "stolen", "name": "Redirected"}})


@pytest.fixture
async def hr() -> AsyncIterator[FakeDirectoryServer]:
    server = FakeDirectoryServer()
    await server.start()
    server.people["0612345"] = {
        "id": "u-1001",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "groups": ["engineering", "admins"],
    }
    yield server
    await server.stop()


class Sleeps:
    """Records the backoff's waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def http_directory(hr: FakeDirectoryServer) -> AsyncIterator[tuple[HttpDirectory, Sleeps]]:
    sleeps = Sleeps()
    directory = HttpDirectory(hr.url, timeout=0.3, retries=2, sleep=sleeps)
    yield directory, sleeps
    await directory.aclose()


ADA = Who("dingtalk", "corp-1", "0612345", name="Ada", mobile="+44 20 7946 0000", employee_no="7")


async def test_http_person_found(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps]
) -> None:
    directory, sleeps = http_directory
    assert await directory.lookup(ADA) == Person(
        directory_id="http:u-1001",
        name="Ada Lovelace",
        email="ada@example.com",
        groups=("engineering", "admins"),
    )
    assert hr.requests == [
        {
            "platform": "dingtalk",
            "tenant": "corp-1",
            "user_id": "0612345",
            "name": "Ada",
            "email": "",
            "mobile": "+44 20 7946 0000",
            "employee_no": "7",
        }
    ]
    assert sleeps.waits == []
    assert directory.source == "http"


async def test_http_404_is_not_a_person(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps]
) -> None:
    directory, _ = http_directory
    assert await directory.lookup(Who("feishu", "t", "ou_unknown")) is None
    assert len(hr.requests) == 1


@pytest.mark.parametrize("fault", ["500", "503", "429", "stall", "garbage"])
async def test_http_transient_failure_is_retried_then_answers(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps], fault: str
) -> None:
    directory, sleeps = http_directory
    hr.faults = [fault, fault]
    person = await directory.lookup(ADA)
    assert person is not None and person.directory_id == "http:u-1001"
    assert len(hr.requests) == 3
    assert len(sleeps.waits) == 2 and all(0 < wait <= 2.0 for wait in sleeps.waits)


@pytest.mark.parametrize("fault", ["500", "stall", "garbage"])
async def test_http_failure_after_the_retries_is_a_directory_error(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps], fault: str
) -> None:
    directory, _ = http_directory
    hr.faults = [fault] * 3
    with pytest.raises(DirectoryError, match=r"127\.0\.0\.1:\d+ did not answer after 3 attempts"):
        await directory.lookup(ADA)
    assert len(hr.requests) == 3


async def test_http_refused_connection_is_a_directory_error(hr: FakeDirectoryServer) -> None:
    url = hr.url
    await hr.stop()
    directory = HttpDirectory(url, timeout=0.3, retries=1, sleep=Sleeps())
    try:
        with pytest.raises(DirectoryError, match="after 2 attempts: ClientConnectorError"):
            await directory.lookup(ADA)
    finally:
        await directory.aclose()


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("401", "answered HTTP 401"),
        ("403", "answered HTTP 403"),
        ("redirect", "answered HTTP 307"),
        ('{"person": {}}', 'no "user" object'),
        ('{"user": {"name": "No id"}}', '"user.id" is not a non-empty string'),
        ('{"user": {"id": "x", "name": ""}}', '"user.name" is not a non-empty string'),
        ('{"user": {"id": "x", "name": "X", "groups": "eng"}}', '"user.groups" is not a list'),
        ('{"user": {"id": "x", "name": "X", "email": 5}}', '"user.email" is not a string'),
        ('["user"]', 'no "user" object'),
    ],
)
async def test_http_answer_that_asking_again_would_repeat_fails_at_once(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps], fault: str, error: str
) -> None:
    directory, sleeps = http_directory
    hr.faults = [fault]
    with pytest.raises(DirectoryError, match=error):
        await directory.lookup(ADA)
    assert len(hr.requests) == 1 and sleeps.waits == []
    assert hr.redirected == []  # the sender's details never went to the redirect's target


async def test_http_answer_is_cleaned_and_a_numeric_id_taken(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps]
) -> None:
    directory, _ = http_directory
    hr.people["n"] = {
        "id": 42,
        "name": " Bob\u0000 \ud800",
        "email": "bob@example.com",
        "groups": ["a", "a", "", "b\u001b"],
    }
    person = await directory.lookup(Who("zim", "", "n"))
    assert person == Person(
        directory_id="http:42", name="Bob \ufffd", email="bob@example.com", groups=("a", "b")
    )


async def test_http_hostile_sender_reaches_the_directory_cleaned(
    hr: FakeDirectoryServer, http_directory: tuple[HttpDirectory, Sleeps]
) -> None:
    directory, _ = http_directory
    await directory.lookup(Who("feishu", "t", "ou_\x00x", name="Eve\ud800\x00", email="e\x07@x"))
    assert hr.requests[0]["name"] == "Eve\ufffd"
    assert hr.requests[0]["email"] == "e@x"
    assert hr.requests[0]["user_id"] == "ou_x~" + hr.requests[0]["user_id"].split("~")[1]


@pytest.mark.parametrize(
    "url",
    [
        "http://hr.example.com/im-lookup",  # a sender's details in clear text
        "https://hr.example.com/im-lookup?key=1",
        "https://user:pw@hr.example.com/im-lookup",
        "ftp://hr.example.com/",
    ],
)
def test_http_url_that_would_leak_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"users http_url (must|may)"):
        HttpDirectory(url)


def test_http_plain_text_names_what_it_would_show() -> None:
    with pytest.raises(ConfigError, match=r"https:// URL.*e-mail addresses and mobile numbers"):
        HttpDirectory("http://hr.example.com/im-lookup")
    assert HttpDirectory("http://localhost:8080/im-lookup").source == "http"  # an emulator


# --- LDAP, against Debian's slapd on loopback -------------------------------------------------

SLAPD = shutil.which("slapd") or shutil.which("slapd", path="/usr/sbin:/usr/local/sbin")
BASE = "dc=example,dc=org"
ADMIN_DN, ADMIN_PASSWORD = f"cn=admin,{BASE}", "admin-secret"
READER_DN, READER_PASSWORD = f"cn=channeld,{BASE}", "reader-secret"
FILTER = "(|(mail={email})(employeeNumber={employee_no}))"
SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {dir}/slapd.pid
database mdb
maxsize 10485760
suffix "{base}"
rootdn "{admin}"
rootpw {password}
directory {dir}/db
overlay memberof
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""


class Slapd:
    """A throwaway OpenLDAP server on loopback ports, its database in a temporary folder; with
    `tls`, also ldaps (and StartTLS) with a certificate for "localhost" from a CA of its own."""

    def __init__(self, folder: Path, *, tls: bool = False) -> None:
        self.folder = folder
        (folder / "db").mkdir(parents=True)
        conf = SLAPD_CONF.format(dir=folder, base=BASE, admin=ADMIN_DN, password=ADMIN_PASSWORD)
        self.port, self.tls_port = _free_port(), _free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        listen = [self.url + "/"]
        if tls:
            self.ca_file = _certificates(folder)
            tls_conf = (
                f"TLSCACertificateFile {self.ca_file}\n"
                f"TLSCertificateFile {folder}/server.pem\n"
                f"TLSCertificateKeyFile {folder}/server.key\n"
            )
            conf = conf.replace("pidfile", tls_conf + "pidfile", 1)
            listen.append(f"ldaps://127.0.0.1:{self.tls_port}/")
        (folder / "slapd.conf").write_text(conf)
        self._listen = " ".join(listen)
        self._ports = [self.port, self.tls_port] if tls else [self.port]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        assert SLAPD is not None
        log = (self.folder / "slapd.log").open("ab")
        self._process = subprocess.Popen(  # -d 0: stay in the foreground, log nothing
            [SLAPD, "-f", str(self.folder / "slapd.conf"), "-h", self._listen, "-d", "0"],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 15
        for port in self._ports:
            while True:  # no event to wait on across processes: poll the port, bounded
                if self._process.poll() is not None:
                    raise RuntimeError((self.folder / "slapd.log").read_text())
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=15)
            self._process = None

    def populate(self) -> None:
        server = ldap3.Server(self.url, get_info=ldap3.NONE)
        admin = ldap3.Connection(server, ADMIN_DN, ADMIN_PASSWORD, auto_bind=True)
        try:
            people, groups = f"ou=people,{BASE}", f"ou=groups,{BASE}"
            entries: list[tuple[str, list[str], dict[str, Any]]] = [
                (BASE, ["dcObject", "organization"], {"o": "Example", "dc": "example"}),
                (people, ["organizationalUnit"], {"ou": "people"}),
                (groups, ["organizationalUnit"], {"ou": "groups"}),
                (READER_DN, ["person"], {"sn": "svc", "userPassword": READER_PASSWORD}),
                (
                    f"uid=ada,{people}",
                    ["inetOrgPerson"],
                    {
                        "cn": "Ada L.",
                        "sn": "Lovelace",
                        "displayName": "Ada Lovelace",
                        "mail": "ada@example.com",
                        "employeeNumber": "1001",
                    },
                ),
                (
                    f"uid=grace,{people}",
                    ["inetOrgPerson"],
                    {
                        "cn": "Grace Hopper",
                        "sn": "Hopper",
                        "mail": "grace@example.com",
                        "employeeNumber": "1002",
                    },
                ),
                (
                    f"uid=bob,{people}",
                    ["inetOrgPerson"],
                    {"cn": "Bob (ops) *", "sn": "Ops", "mail": "bob\\ops@example.com"},
                ),
                (
                    f"cn=engineering,{groups}",
                    ["groupOfNames"],
                    {"member": [f"uid=ada,{people}", f"uid=grace,{people}"]},
                ),
                (f"cn=admins,{groups}", ["groupOfNames"], {"member": [f"uid=ada,{people}"]}),
            ]
            for dn, classes, attributes in entries:
                assert admin.add(dn, classes, attributes), (dn, admin.result)
        finally:
            admin.unbind()  # ldap3's `with` leaves a connection bound before it open


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _certificates(folder: Path) -> Path:
    """A CA and a server certificate for "localhost" signed by it; the CA's file."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, issuer: str, key: ec.EllipticCurvePrivateKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", "test CA", ca_key).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    )
    server = build("localhost", "test CA", key).add_extension(
        x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.sign(ca_key, hashes.SHA256()).public_bytes(pem))
    (folder / "server.pem").write_bytes(server.sign(ca_key, hashes.SHA256()).public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "ca.pem"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if SLAPD is None:
        if os.environ.get("CHANNELD_REQUIRE_SLAPD"):
            pytest.fail("slapd is not installed (apt-get install slapd ldap-utils)")
        pytest.skip("slapd is not installed (Debian: apt-get install slapd ldap-utils)")
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        server.populate()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd-tls"), tls=True)
    server.start()
    try:
        server.populate()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def ldap_directory(slapd: Slapd) -> AsyncIterator[LdapDirectory]:
    directory = _ldap(slapd.url)
    yield directory
    await directory.aclose()


def _ldap(
    url: str,
    filter: str = FILTER,
    password: str = READER_PASSWORD,
    *,
    timeout: float = 3.0,
    ca_file: Path | None = None,
) -> LdapDirectory:
    return LdapDirectory(
        url,
        bind_dn=READER_DN,
        bind_password=password,
        base_dn=BASE,
        filter=filter,
        groups_attribute="memberOf",
        timeout=timeout,
        ca_file=None if ca_file is None else str(ca_file),
    )


ADA_DN = f"uid=ada,ou=people,{BASE}"


async def test_ldap_person_found_by_email_with_groups(ldap_directory: LdapDirectory) -> None:
    person = await ldap_directory.lookup(
        Who("dingtalk", "corp", "0612345", email="ada@example.com")
    )
    assert person == Person(
        directory_id=f"ldap:{ADA_DN}",
        name="Ada Lovelace",
        email="ada@example.com",
        groups=(
            f"cn=engineering,ou=groups,{BASE}",
            f"cn=admins,ou=groups,{BASE}",
        ),
    )
    assert ldap_directory.source == "ldap"


async def test_ldap_unknown_value_matches_nobody_and_the_other_still_finds(
    ldap_directory: LdapDirectory,
) -> None:
    # no e-mail known: (mail=\00) matches nobody, the employee number still finds Grace
    person = await ldap_directory.lookup(Who("feishu", "t", "ou_1", employee_no="1002"))
    assert person is not None
    assert person.directory_id == f"ldap:uid=grace,ou=people,{BASE}"
    assert person.name == "Grace Hopper"  # no displayName: the cn
    assert person.groups == (f"cn=engineering,ou=groups,{BASE}",)


async def test_ldap_nobody_found_is_none(ldap_directory: LdapDirectory) -> None:
    assert await ldap_directory.lookup(Who("zim", "", "u", email="nobody@example.com")) is None
    who = Who("zim", "", "u", name="Ada Lovelace")  # the filter names neither e-mail nor number
    assert ldap_directory.filter_for(who) is None
    assert await ldap_directory.lookup(who) is None


@pytest.mark.parametrize(
    "hostile",
    [
        "*",
        "*)(objectClass=*",
        "ada@example.com)(|(mail=*",
        "*)(|(employeeNumber=*)",
        "\\2a",  # an escape written by the sender is a literal backslash, not a wildcard
        "ada@example.com\ud800",
        "a*",
    ],
)
async def test_ldap_injection_in_a_name_or_email_finds_nothing(slapd: Slapd, hostile: str) -> None:
    directory = _ldap(slapd.url, filter="(|(mail={email})(cn={name}))")
    try:
        assert await directory.lookup(Who("feishu", "t", "ou_x", name=hostile)) is None
        assert await directory.lookup(Who("feishu", "t", "ou_x", email=hostile)) is None
    finally:
        await directory.aclose()


async def test_ldap_metacharacters_in_a_real_value_match_literally(slapd: Slapd) -> None:
    directory = _ldap(slapd.url, filter="(|(mail={email})(cn={name}))")
    try:
        by_name = await directory.lookup(Who("feishu", "t", "ou_b", name="Bob (ops) *"))
        by_mail = await directory.lookup(Who("feishu", "t", "ou_b", email="bob\\ops@example.com"))
        assert by_name is not None and by_name.directory_id == f"ldap:uid=bob,ou=people,{BASE}"
        assert by_mail == by_name
    finally:
        await directory.aclose()


def test_ldap_escape_covers_rfc_4515() -> None:
    assert escape("a*b(c)d\\e\x00f") == "a\\2ab\\28c\\29d\\5ce\\00f"
    assert escape("Zoë 张") == "Zoë 张"  # UTF-8 passes as it is


def test_ldap_filter_never_carries_a_raw_nul_or_surrogate(slapd: Slapd) -> None:
    directory = _ldap(slapd.url, filter="(cn={name})")
    text = directory.filter_for(Who("feishu", "t", "u", name="x\x00\ud800)(cn=*"))
    assert text == "(cn=x\ufffd\\29\\28cn=\\2a)"


async def test_ldap_filter_naming_two_people_is_an_error(ldap_directory: LdapDirectory) -> None:
    who = Who("zim", "", "u", email="ada@example.com", employee_no="1002")
    with pytest.raises(DirectoryError, match="found 2 entries for one sender"):
        await ldap_directory.lookup(who)


async def test_ldap_wrong_bind_password_is_an_error_that_does_not_show_it(slapd: Slapd) -> None:
    directory = _ldap(slapd.url, password="wrong-reader-secret")
    try:
        with pytest.raises(DirectoryError, match="LDAPInvalidCredentialsResult") as caught:
            await directory.lookup(Who("zim", "", "u", email="ada@example.com"))
        assert "wrong-reader-secret" not in str(caught.value)
    finally:
        await directory.aclose()


async def test_ldap_server_down_is_an_error_and_a_restart_is_survived(
    tmp_path: Path, slapd: Slapd
) -> None:
    own = Slapd(tmp_path / "own")
    directory = _ldap(own.url)
    try:
        with pytest.raises(DirectoryError, match="LDAPSocketOpenError"):
            await directory.lookup(Who("zim", "", "u", email="ada@example.com"))
        own.start()
        own.populate()
        assert await directory.lookup(Who("zim", "", "u", email="ada@example.com")) is not None
        own.stop()
        own.start()  # the kept connection broke: one reconnect, no error
        assert await directory.lookup(Who("zim", "", "u", email="ada@example.com")) is not None
    finally:
        await directory.aclose()
        own.stop()


async def test_ldap_lookups_run_beside_the_loop(ldap_directory: LdapDirectory) -> None:
    whos = [Who("zim", "", str(n), email="ada@example.com") for n in range(20)]
    people = await asyncio.gather(*(ldap_directory.lookup(who) for who in whos))
    assert {p.directory_id for p in people if p is not None} == {f"ldap:{ADA_DN}"}
    assert len(people) == 20


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"filter": "(mail={mail})"}, r"unknown placeholder \{mail\}"),
        ({"filter": "(mail={email!r})"}, r"unknown placeholder \{email\}"),
        ({"filter": "(mail={email:>9})"}, r"unknown placeholder"),
        ({"filter": "(mail={email.__class__})"}, r"unknown placeholder"),
        ({"filter": "(objectClass=person)"}, "names no placeholder"),
        ({"filter": "mail={email}"}, "one parenthesised filter"),
        ({"filter": "(mail={email)"}, "literal brace"),
        ({"url": "http://ldap.example.com"}, "ldaps://host"),
        ({"url": "ldaps://ldap.example.com/dc=example"}, "only a scheme, host and port"),
        ({"url": "ldaps://u:p@ldap.example.com"}, "only a scheme, host and port"),
        ({"url": "ldaps://ldap.example.com:99999"}, "port must be a number"),
    ],
)
def test_ldap_settings_that_cannot_work_are_refused(kwargs: dict[str, str], error: str) -> None:
    settings = {"url": "ldaps://ldap.example.com", "filter": FILTER} | kwargs
    with pytest.raises(ConfigError, match=error):
        LdapDirectory(
            settings["url"],
            bind_dn=READER_DN,
            bind_password=READER_PASSWORD,
            base_dn=BASE,
            filter=settings["filter"],
        )


@pytest.mark.parametrize(
    ("url", "start_tls"),
    [
        ("ldap://ldap.example.com", True),  # the password never travels in clear text
        ("ldaps://ldap.example.com:636", False),  # TLS from the first byte
        ("ldap://127.0.0.1:3389", False),  # loopback: a test server or a local proxy
        ("ldap://localhost", False),
    ],
)
def test_ldap_beyond_loopback_speaks_tls(url: str, start_tls: bool) -> None:
    directory = LdapDirectory(
        url, bind_dn=READER_DN, bind_password=READER_PASSWORD, base_dn=BASE, filter=FILTER
    )
    assert directory.start_tls is start_tls


ADA_BY_MAIL = Who("zim", "", "u", email="ada@example.com")


async def test_ldap_server_that_stalls_is_an_error_within_the_timeout(tmp_path: Path) -> None:
    own = Slapd(tmp_path / "own")
    own.start()
    directory = _ldap(own.url, timeout=0.5)
    try:
        own.populate()
        os.kill(own.pid, signal.SIGSTOP)  # the kernel still accepts; nothing answers
        started = time.monotonic()
        with pytest.raises(DirectoryError, match=r"LDAP directory at 127\.0\.0\.1 failed"):
            await directory.lookup(ADA_BY_MAIL)
        assert time.monotonic() - started < 5  # bounded by the timeout, not by the server
    finally:
        os.kill(own.pid, signal.SIGCONT)
        await directory.aclose()
        own.stop()


async def test_ldaps_verifies_the_certificate_and_the_host_name(tls_slapd: Slapd) -> None:
    ldaps = f"ldaps://localhost:{tls_slapd.tls_port}"
    trusted = _ldap(ldaps, ca_file=tls_slapd.ca_file)
    untrusted = _ldap(ldaps)  # the system's CAs do not know this one
    wrong_name = _ldap(f"ldaps://127.0.0.1:{tls_slapd.tls_port}", ca_file=tls_slapd.ca_file)
    try:
        person = await trusted.lookup(ADA_BY_MAIL)
        assert person is not None and person.directory_id == f"ldap:{ADA_DN}"
        with pytest.raises(DirectoryError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusted.lookup(ADA_BY_MAIL)
        # one readable line: the TLS error as Python words it, no nested tuple reprs
        mismatch = (
            r"failed: LDAPSocketOpenError: socket ssl wrapping error: \[SSL: "
            r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed: IP address mismatch, "
            r"certificate is not valid for '127\.0\.0\.1'"
        )
        with pytest.raises(DirectoryError, match=mismatch):
            await wrong_name.lookup(ADA_BY_MAIL)
    finally:
        for directory in (trusted, untrusted, wrong_name):
            await directory.aclose()


async def test_ldap_start_tls_before_the_bind(tls_slapd: Slapd) -> None:
    url = f"ldap://localhost:{tls_slapd.port}"
    directory, untrusted = _ldap(url, ca_file=tls_slapd.ca_file), _ldap(url)
    # a loopback URL speaks plain LDAP; a remote one would StartTLS: forced here, as no name but
    # loopback resolves in the tests
    directory.start_tls = untrusted.start_tls = True
    try:
        person = await directory.lookup(ADA_BY_MAIL)
        assert person is not None and person.directory_id == f"ldap:{ADA_DN}"
        with pytest.raises(DirectoryError, match=r"LDAPStartTLSError.*CERTIFICATE_VERIFY_FAILED"):
            await untrusted.lookup(ADA_BY_MAIL)
    finally:
        await directory.aclose()
        await untrusted.aclose()


def test_ldap_ca_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="users ldap CA file"):
        _ldap("ldaps://ldap.example.com", ca_file=tmp_path / "missing.pem")
