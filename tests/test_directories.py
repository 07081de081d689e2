"""The user directories: the file one, the HTTP one against a loopback fake, the LDAP one against a
real slapd on loopback (skipped, saying why, where Debian's slapd is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.users.directory import Person, Who
from channels.users.file import FileDirectory
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
