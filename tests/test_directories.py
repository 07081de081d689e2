"""The user directories: the file one, the HTTP one against a loopback fake, the LDAP one against a
real slapd on loopback (skipped, saying why, where Debian's slapd is not installed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from channels.users.directory import DirectoryError, Person, Who
from channels.users.file import FileDirectory
from channels.users.http import HttpDirectory
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
    with pytest.raises(ConfigError, match="users http_url"):
        HttpDirectory(url)
