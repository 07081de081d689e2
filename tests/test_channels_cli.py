"""`channeld channels`: the real CLI against a real daemon's admin API and the DingTalk emulator."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import io
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from channels.dingtalk.emulator import EmulatorThread
from channels.model import ChannelState
from daemon import channels_cli
from daemon.app import Daemon
from daemon.channels_args import TOKEN_ENV, URL_ENV, setting
from daemon.channels_cli import read_secrets, register
from daemon.config import WebhooksSection, validate
from tests.dingtalk_support import (
    DINGTALK_CLIENT_ID,
    DINGTALK_CLIENT_SECRET,
    DINGTALK_TEMPLATE,
    dingtalk_emulator,
)
from tests.e2e_support import CHANNEL, FAST_BACKOFF, Stack, settings_for, start_stack, wait_until
from tests.feishu_support import (
    FEISHU_APP_ID,
    FEISHU_APP_SECRET,
    FeishuEmulatorThread,
    feishu_emulator,
)

__all__ = ["dingtalk_emulator", "feishu_emulator"]

TOKEN = "t0k-admin-token"  # the daemon wants at least 8 characters


class TtyInput(io.StringIO):
    """Typed answers on what looks like a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Result:
    code: int
    out: str
    err: str


def parse(argv: list[str]) -> argparse.Namespace:
    """The `channeld` parser as daemon/cli.py builds it, with only the channels command."""
    parser = argparse.ArgumentParser(prog="channeld")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


class Cli:
    """Runs `channeld channels ...` in-process on a worker thread: main() owns its own loop.

    Its environment points at the daemon's state directory, where the CLI finds the admin token
    the daemon generated (as it would on the daemon's machine), and holds no token of its own.
    """

    def __init__(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, daemon: Daemon
    ) -> None:
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        self.url = admin_url(daemon)
        monkeypatch.setenv("STATE_DIRECTORY", str(daemon.settings.daemon.state_dir))
        for name in (TOKEN_ENV, "CHANNELD_CONFIG", "CHANNELD_DAEMON__STATE_DIR"):
            monkeypatch.delenv(name, raising=False)

    async def __call__(self, *argv: str, stdin: io.StringIO | None = None) -> Result:
        self._monkeypatch.setattr(sys, "stdin", stdin or io.StringIO(""))
        self._capsys.readouterr()
        args = parse(["channels", *argv, "--url", self.url])
        code = await asyncio.to_thread(args.func, args)
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    async def json(self, *argv: str) -> Any:
        result = await self(*argv, "--json")
        assert result.code == 0, result.err
        return json.loads(result.out)


def admin_url(daemon: Daemon) -> str:
    assert daemon.admin is not None
    return f"http://127.0.0.1:{daemon.admin.port}"


@pytest.fixture
async def stack(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> AsyncIterator[Stack]:
    """A daemon with the provisioned channel "dt" connected to the emulator; no admin token."""
    running = await start_stack(tmp_path, dingtalk_emulator, None)
    try:
        await running.connected()
        yield running
    finally:
        await running.stop()


@pytest.fixture
def cli(stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch, stack.daemon)


def state_of(stack: Stack, channel_id: str) -> ChannelState:
    assert stack.daemon.manager is not None
    return stack.daemon.manager.status(channel_id).state


async def live_sockets(stack: Stack) -> int:
    return len(await stack.emulator.live_connections(DINGTALK_CLIENT_ID))


# -- against a running daemon -------------------------------------------------------------------


async def test_list_prints_a_table_and_the_raw_json(cli: Cli) -> None:
    result = await cli("list")
    assert result.code == 0, result.err
    header, row = result.out.splitlines()
    assert header.split() == [
        "ID",
        "TYPE",
        "STATE",
        "UPTIME",
        "RECONNECTS",
        "MESSAGES",
        "LAST",
        "ERROR",
    ]
    assert row.split()[:3] == [CHANNEL, "dingtalk", "connected"]
    assert row.index("connected") == header.index("STATE")
    assert "\x1b[" not in result.out  # captured stdout is not a terminal

    body = await cli.json("list")
    [channel] = body["channels"]
    assert channel["id"] == CHANNEL
    assert channel["status"]["state"] == "connected"


async def test_show_prints_status_and_settings_with_the_secret_masked(cli: Cli) -> None:
    result = await cli("show", CHANNEL)
    assert result.code == 0, result.err
    lines = dict(line.split(maxsplit=1) for line in result.out.splitlines() if " " in line.strip())
    assert lines["source"] == "config"
    assert lines["client_id"] == DINGTALK_CLIENT_ID
    assert lines["client_secret"] == "***"
    assert re.search(r"^state\s+connected$", result.out, re.MULTILINE)
    assert DINGTALK_CLIENT_SECRET not in result.out

    body = await cli.json("show", CHANNEL)
    assert body["settings"]["client_secret"] == "***"
    assert body["settings"]["card_template_id"] == DINGTALK_TEMPLATE


async def test_api_channel_round_trip(cli: Cli, stack: Stack) -> None:
    added = await cli(
        "add",
        "--id",
        "api1",
        "--agent",
        "default",
        "--set",
        f"client_id={DINGTALK_CLIENT_ID}",
        "--set",
        f"api_base={stack.emulator.url}",
        "--set",
        f"card_template_id={DINGTALK_TEMPLATE}",
        "--set",
        "request_timeout=3",
        "--secret",
        "client_secret",
        stdin=io.StringIO(DINGTALK_CLIENT_SECRET + "\n"),
    )
    assert added.code == 0, added.err
    assert re.search(r"^source\s+api$", added.out, re.MULTILINE)
    assert DINGTALK_CLIENT_SECRET not in added.out
    # the secret read from stdin is the one the emulator accepts: the channel really connects
    await wait_until(lambda: state_of(stack, "api1") is ChannelState.CONNECTED)
    assert await live_sockets(stack) == 2

    assert stack.daemon.manager is not None
    first_connection = stack.daemon.manager.status("api1").connected_at
    edited = await cli.json("edit", "api1", "--set", "card_update_interval=0.1")
    assert edited["settings"]["card_update_interval"] == 0.1  # parsed as JSON, not a string
    assert edited["settings"]["client_secret"] == "***"
    assert edited["version"] > 1
    # the edit restarts the channel; it can only reconnect if the stored secret was kept
    await wait_until(
        lambda: (
            state_of(stack, "api1") is ChannelState.CONNECTED
            and stack.daemon.manager is not None
            and stack.daemon.manager.status("api1").connected_at != first_connection
        )
    )

    emptied = await cli("edit", "api1", "--set", "client_secret=")
    assert emptied.code == channels_cli.EXIT_INVALID
    assert "client_secret: must not be empty" in emptied.err

    refused = await cli("delete", "api1")  # stdin is not a terminal and there is no --yes
    assert refused.code == channels_cli.EXIT_USAGE
    assert "--yes" in refused.err
    declined = await cli("delete", "api1", stdin=TtyInput("n\n"))
    assert declined.code == channels_cli.EXIT_ERROR
    assert "delete channel 'api1'? [y/N]" in declined.err
    assert (await cli("show", "api1")).code == 0

    deleted = await cli("delete", "api1", "--yes")
    assert deleted.code == 0, deleted.err
    assert deleted.out.strip() == "channel 'api1' deleted"
    gone = await cli("show", "api1")
    assert gone.code == channels_cli.EXIT_NOT_FOUND
    await wait_until(lambda: state_of(stack, CHANNEL) is ChannelState.CONNECTED)
    assert [c["id"] for c in (await cli.json("list"))["channels"]] == [CHANNEL]


async def test_confirmed_delete_on_a_terminal(cli: Cli, stack: Stack) -> None:
    body = await cli.json(
        "add",
        "--id",
        "api2",
        "--disabled",
        "--set",
        f"client_id={DINGTALK_CLIENT_ID}",
        "--set",
        "client_secret=s3cret",
        "--set",
        f"api_base={stack.emulator.url}",
    )
    assert body["enabled"] is False
    assert body["status"]["state"] == "disabled"
    result = await cli("delete", "api2", stdin=TtyInput("y\n"))
    assert result.code == 0, result.err
    assert (await cli("show", "api2")).code == channels_cli.EXIT_NOT_FOUND


async def test_disable_enable_restart_change_the_real_state(cli: Cli, stack: Stack) -> None:
    disabled = await cli("disable", CHANNEL)
    assert disabled.code == 0, disabled.err
    assert disabled.out.strip() == f"channel {CHANNEL!r} disabled: disabled"
    assert state_of(stack, CHANNEL) is ChannelState.DISABLED
    await stack.emulator.wait_for(lambda e: not e.live_connections(DINGTALK_CLIENT_ID))
    assert (await cli.json("show", CHANNEL))["enabled"] is False

    enabled = await cli.json("enable", CHANNEL)
    assert enabled["enabled"] is True
    assert enabled["status"]["state"] in ("connecting", "connected")
    await stack.connected()

    assert stack.daemon.manager is not None
    before = stack.daemon.manager.status(CHANNEL).connected_at
    restarted = await cli("restart", CHANNEL)
    assert restarted.code == 0, restarted.err
    assert restarted.out.startswith(f"channel {CHANNEL!r} restarted: ")
    await wait_until(
        lambda: (
            state_of(stack, CHANNEL) is ChannelState.CONNECTED
            and stack.daemon.manager is not None
            and stack.daemon.manager.status(CHANNEL).connected_at != before
        )
    )
    assert await live_sockets(stack) == 1


async def test_errors_carry_the_server_message_and_their_exit_code(cli: Cli) -> None:
    missing = await cli("show", "nope")
    assert missing.code == channels_cli.EXIT_NOT_FOUND
    assert missing.err == "channeld: no channel 'nope'\n"
    assert missing.out == ""

    managed = await cli("edit", CHANNEL, "--set", "queue_limit=3")
    assert managed.code == channels_cli.EXIT_CONFLICT
    assert "managed by the config file" in managed.err

    duplicate = await cli(
        "add", "--id", CHANNEL, "--set", "client_id=x", "--set", "client_secret=y"
    )
    assert duplicate.code == channels_cli.EXIT_CONFLICT
    assert "already exists" in duplicate.err

    invalid = await cli("add", "--id", "bad", "--set", "client_id=x", "--set", "client_secret=")
    assert invalid.code == channels_cli.EXIT_INVALID
    first, *fields = invalid.err.splitlines()
    assert first.startswith("channeld: invalid channel settings: client_secret")
    assert any(line.startswith("  client_secret: ") for line in fields)

    unknown_agent = await cli("add", "--id", "bad", "--agent", "ghost", "--set", "client_id=x")
    assert unknown_agent.code == channels_cli.EXIT_INVALID

    nothing = await cli("edit", CHANNEL)
    assert nothing.code == channels_cli.EXIT_USAGE
    assert "nothing to change" in nothing.err


async def test_wrong_or_missing_token_is_unauthorized(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path), "log_level": "DEBUG"},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "agents": {"default": {"type": "echo", "delay": 0.01}},
            "channels": [],
        }
    )
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        cli = Cli(capsys, monkeypatch, daemon)
        missing = await cli("list")
        assert missing.code == channels_cli.EXIT_UNAUTHORIZED
        assert "missing or wrong bearer token" in missing.err
        assert "CHANNELD_ADMIN_TOKEN" in missing.err
        assert f"{tmp_path / 'admin.token'} is absent or not readable" in missing.err

        wrong = await cli("list", "--token", "not-the-token-42")
        assert wrong.code == channels_cli.EXIT_UNAUTHORIZED
        assert "not-the-token-42" not in wrong.out + wrong.err

        right = await cli("list", "--token", TOKEN)
        assert right.code == 0, right.err
        assert right.out.strip() == "no channels"

        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        assert (await cli("list", "--token-file", str(token_file))).code == 0
        unreadable = await cli("list", "--token-file", str(tmp_path / "absent"))
        assert unreadable.code == channels_cli.EXIT_USAGE

        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        assert (await cli("list")).code == 0
    finally:
        await daemon.stop()


async def test_the_generated_token_is_found_through_the_daemons_config(
    cli: Cli, stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = stack.daemon.settings.daemon.state_dir
    token_file = state_dir / "admin.token"
    assert stack.daemon.admin is not None
    assert token_file.read_text().strip() == stack.daemon.admin.token

    # run from another directory, with another default state directory: nothing found
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "elsewhere"))
    lost = await cli("list")
    assert lost.code == channels_cli.EXIT_UNAUTHORIZED
    assert f"{tmp_path / 'elsewhere' / 'admin.token'} is absent or not readable" in lost.err
    # --config names the daemon's config, whose state_dir holds the token
    config = tmp_path / "daemon.toml"
    config.write_text(f'[daemon]\nstate_dir = "{state_dir}"\n[admin]\ntoken = "${{UNSET_VAR}}"\n')
    found = await cli("list", "--config", str(config))
    assert found.code == 0, found.err
    monkeypatch.setenv("CHANNELD_CONFIG", str(config))
    assert (await cli("disable", CHANNEL)).code == 0
    broken = await cli("list", "--config", str(tmp_path / "absent.toml"))
    assert broken.code == channels_cli.EXIT_USAGE
    assert "cannot read config file" in broken.err

    # a stale token file (the daemon's token changed): the 401 says which token was sent
    token_file.write_text("stale-token-0000\n")
    stale = await cli("list")
    assert stale.code == channels_cli.EXIT_UNAUTHORIZED
    assert f"sent the token in {token_file}" in stale.err
    assert "stale-token-0000" not in stale.err


async def test_secrets_come_from_a_file_and_argv_secrets_are_warned_about(
    cli: Cli, stack: Stack, tmp_path: Path
) -> None:
    secret = tmp_path / "client_secret"
    secret.write_text(DINGTALK_CLIENT_SECRET + "\nsecond line ignored\n")
    added = await cli(
        "add",
        "--id",
        "from-file",
        "--set",
        f"client_id={DINGTALK_CLIENT_ID}",
        "--set",
        f"api_base={stack.emulator.url}",
        "--secret-file",
        f"client_secret={secret}",
    )
    assert added.code == 0, added.err
    assert added.err == ""
    # the emulator accepts only the right secret: read from the file, the channel connects
    await wait_until(lambda: state_of(stack, "from-file") is ChannelState.CONNECTED)

    edited = await cli("edit", "from-file", "--set", "client_secret=in-the-process-list")
    assert edited.code == 0
    assert "warning: --set client_secret=... shows the secret in the process list" in edited.err
    assert "--secret-file client_secret=PATH" in edited.err
    assert "in-the-process-list" not in edited.err + edited.out

    absent = await cli("edit", "from-file", "--secret-file", f"client_secret={tmp_path / 'nope'}")
    assert absent.code == channels_cli.EXIT_USAGE
    assert "--secret-file client_secret: cannot read" in absent.err
    with pytest.raises(SystemExit):
        parse(["channels", "edit", "x", "--secret-file", "client_secret"])


# -- without a daemon ---------------------------------------------------------------------------


def run_sync(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Result:
    args = parse(["channels", *argv])
    code = args.func(args)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def test_unreachable_daemon_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_sync(capsys, ["list", "--url", f"http://127.0.0.1:{port}"])
    assert result.code == channels_cli.EXIT_ERROR
    assert result.err.count("\n") == 1
    assert result.err.startswith(f"channeld: cannot reach the daemon at http://127.0.0.1:{port}: ")
    assert result.out == ""


def test_silent_daemon_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run_sync(capsys, ["list", "--url", url, "--timeout", "0.2"])
    assert result.code == channels_cli.EXIT_ERROR
    assert result.err == f"channeld: no answer from {url} within 0.2 s\n"


def test_url_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:1/")
    result = run_sync(capsys, ["list"])
    assert result.code == channels_cli.EXIT_ERROR
    assert (
        result.err
        == "channeld: cannot reach the daemon at http://127.0.0.1:1: Connection refused\n"
    )


def test_url_without_http_scheme_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_sync(capsys, ["list", "--url", "localhost:8787"])
    assert result.code == channels_cli.EXIT_USAGE
    assert "--url must start with http:// or https://" in result.err


def test_set_values_are_json_when_they_parse() -> None:
    assert setting("request_timeout=3") == ("request_timeout", 3)
    assert setting("enabled=false") == ("enabled", False)
    assert setting("client_id=ding-test") == ("client_id", "ding-test")
    assert setting('client_id="123"') == ("client_id", "123")
    assert setting("client_secret=") == ("client_secret", "")
    assert setting("note=a=b") == ("note", "a=b")


def test_malformed_set_is_a_usage_error_that_does_not_echo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(["channels", "add", "--id", "x", "--set", "hunter2"])
    assert exited.value.code == 2
    assert "hunter2" not in capsys.readouterr().err


def test_secrets_are_prompted_on_a_terminal_and_read_from_pipes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return "typed"

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert read_secrets(["client_secret"], TtyInput("")) == {"client_secret": "typed"}
    assert prompts == ["client_secret: "]
    piped = io.StringIO("one\r\ntwo\n")
    assert read_secrets(["a", "b"], piped) == {"a": "one", "b": "two"}


async def test_a_feishu_channel_from_the_command_line(
    cli: Cli, stack: Stack, feishu_emulator: FeishuEmulatorThread
) -> None:
    added = await cli(
        "add",
        "--id",
        "fs1",
        "--type",
        "feishu",
        "--set",
        f"app_id={FEISHU_APP_ID}",
        "--set",
        f"domain={feishu_emulator.url}",
        "--secret",
        "app_secret",
        stdin=io.StringIO(FEISHU_APP_SECRET + "\n"),
    )
    assert added.code == 0, added.err
    assert FEISHU_APP_SECRET not in added.out
    await wait_until(lambda: state_of(stack, "fs1") is ChannelState.CONNECTED)
    assert len(await feishu_emulator.live_connections(FEISHU_APP_ID)) == 1
    shown = await cli.json("show", "fs1")
    assert shown["type"] == "feishu" and shown["settings"]["app_secret"] == "***"


async def test_the_daemons_config_also_names_where_its_admin_api_listens(
    stack: Stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert stack.daemon.admin is not None
    state_dir = stack.daemon.settings.daemon.state_dir
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{state_dir}"\n'
        f'[admin]\nlisten = "0.0.0.0:{stack.daemon.admin.port}"\n'  # reached over loopback
    )
    for name in (TOKEN_ENV, URL_ENV, "CHANNELD_CONFIG", "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    args = parse(["channels", "list", "--config", str(config)])
    capsys.readouterr()
    assert await asyncio.to_thread(args.func, args) == 0
    assert CHANNEL in capsys.readouterr().out


# -- a channel's nested voice section -------------------------------------------------------------

ZEGO_SECRET = "zego-server-secret-from-stdin"


@pytest.fixture
async def voice_cli(
    tmp_path: Path,
    dingtalk_emulator: EmulatorThread,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Cli, Daemon]]:
    """The CLI against a daemon whose callback listener (which serves voice) takes port 0."""
    settings = settings_for(tmp_path, dingtalk_emulator.url, None)
    settings = settings.model_copy(update={"webhooks": WebhooksSection(listen="127.0.0.1:0")})
    daemon = Daemon(settings, backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        yield Cli(capsys, monkeypatch, daemon), daemon
    finally:
        await daemon.stop()


def shown(out: str) -> dict[str, str]:
    """The `show` view's lines as key -> value (keys may hold one space; two or more end them)."""
    pairs = (re.split(r" {2,}", line.strip(), maxsplit=1) for line in out.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


async def test_a_voice_section_from_the_command_line(
    voice_cli: tuple[Cli, Daemon], dingtalk_emulator: EmulatorThread
) -> None:
    cli, daemon = voice_cli
    added = await cli(
        "add",
        "--id",
        "voiced",
        "--set",
        f"client_id={DINGTALK_CLIENT_ID}",
        "--set",
        f"api_base={dingtalk_emulator.url}",
        "--set",
        f"card_template_id={DINGTALK_TEMPLATE}",
        "--set",
        "voice.public_base_url=https://bot.example.com",
        "--set",
        "voice.zego.app_id=1234567890",
        "--set",
        'voice.zego.tts={"Vendor": "CosyVoice", "Params": {"voice": "longxiaochun"}}',
        "--secret",
        "client_secret",
        "--secret",
        "voice.zego.server_secret",
        stdin=io.StringIO(f"{DINGTALK_CLIENT_SECRET}\n{ZEGO_SECRET}\n"),
    )
    assert added.code == 0, added.err
    lines = shown(added.out)
    # the URLs for the clouds' consoles, then each setting of a section by its dotted path
    assert lines["voice llm endpoint"] == "https://bot.example.com/voice/voiced/chat/completions"
    assert lines["voice callback url"] == "https://bot.example.com/hooks/voiced/voice"
    assert "voice aliyun llm base" not in lines  # no Alibaba section
    assert lines["voice.zego.server_secret"] == "***"
    assert lines["voice.zego.app_id"] == "1234567890"
    assert lines["voice.public_base_url"] == "https://bot.example.com"
    assert lines["voice.aliyun"] == "-"
    # a provider's object may carry a vendor's token: a secret, never shown
    assert lines["voice.zego.tts"] == "***"
    assert ZEGO_SECRET not in added.out + added.err

    async def stored_secret() -> str:
        assert daemon.store is not None and daemon.channels is not None
        record = await daemon.store.get_channel("voiced")
        assert record is not None
        voice = daemon.channels.decode(record).voice
        assert voice is not None and voice.zego is not None
        return voice.zego.server_secret.get_secret_value()

    assert await stored_secret() == ZEGO_SECRET

    # an edit names only what changes: the section is merged, its secret kept
    edited = await cli("edit", "voiced", "--set", "voice.max_call_seconds=600")
    assert edited.code == 0, edited.err
    assert shown(edited.out)["voice.max_call_seconds"] == "600"
    assert await stored_secret() == ZEGO_SECRET

    # moving where the ZEGO secret signs needs it again, and says which
    moved = await cli("edit", "voiced", "--set", "voice.zego.api_base=https://zego.example.org")
    assert moved.code == channels_cli.EXIT_CONFLICT
    assert "  voice.zego.server_secret: required: voice.zego.api_base decides" in moved.err

    removed = await cli("edit", "voiced", "--set", "voice=null")
    assert removed.code == 0, removed.err
    lines = shown(removed.out)
    assert lines["voice"] == "-"
    assert "voice llm endpoint" not in lines


def test_dotted_keys_become_nested_objects() -> None:
    assert channels_cli.nested(
        [("voice.zego.app_id", 1), ("voice.public_base_url", "u"), ("agent", "a")]
    ) == {"voice": {"zego": {"app_id": 1}, "public_base_url": "u"}, "agent": "a"}
    # a later key reaches into an object given whole; a later object replaces what came before
    assert channels_cli.nested([("voice", {"zego": {"app_id": 1}}), ("voice.zego.app_id", 2)]) == {
        "voice": {"zego": {"app_id": 2}}
    }
    assert channels_cli.nested([("voice.max_call_seconds", 60), ("voice", None)]) == {"voice": None}
