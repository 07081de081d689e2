"""The platform registry: a platform registered in a test reaches the config, `check-config`, the
admin API and its OpenAPI document, `channeld emulate` and `channeld chat` with no change to
`daemon/`; unregistering it restores everything as it was."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from channels import registry
from channels.dingtalk.config import DingTalkChannelConfig
from channels.feishu.config import FeishuChannelConfig
from common.errors import ConfigError
from daemon.app import Daemon
from daemon.chat import add_arguments as chat_arguments
from daemon.chat import main as chat_main
from daemon.cli import main as cli_main
from daemon.config import EXIT_CONFIG_ERROR, ConfigurationError, load, validate
from daemon.openapi import openapi_document
from tests.e2e_support import FAST_BACKOFF
from tests.registry_support import (
    DUMMY,
    DUMMY_EMULATOR_HELP,
    DUMMY_EMULATOR_URL,
    Dummy,
    DummyChannelConfig,
    dummy,
    dummy_channel,
)

__all__ = ["dummy"]

TOKEN = "registry-test-token"
ROOT = Path(__file__).resolve().parent.parent

DUMMY_FILE = """
[agents.default]
type = "echo"

[[channels]]
id = "dm-1"
type = "dummy"
room = "lobby"
token = "${DUMMY_TOKEN}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channeld.toml"
    path.write_text(text, encoding="utf-8")
    return path


def emulate_help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What `channeld emulate ... --help` prints."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["emulate", *argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


# -- the config file and check-config -----------------------------------------------------------


def test_a_registered_platform_is_part_of_the_config(tmp_path: Path, dummy: Dummy) -> None:
    settings = load(write(tmp_path, DUMMY_FILE), {"DUMMY_TOKEN": "s3cret-room"})
    (channel,) = settings.channels
    assert isinstance(channel, DummyChannelConfig)
    assert channel.room == "lobby"
    assert channel.token.get_secret_value() == "s3cret-room"
    assert "s3cret-room" not in repr(settings)
    # errors name the offending key and the channel, as for the built-in platforms
    broken = DUMMY_FILE.replace('room = "lobby"', 'room = ""\ncolour = "red"')
    with pytest.raises(ConfigurationError) as caught:
        load(write(tmp_path, broken), {"DUMMY_TOKEN": "x"})
    assert "channels.0.room (channel 'dm-1')" in str(caught.value)
    assert "channels.0.colour (channel 'dm-1')" in str(caught.value)


def test_an_unknown_type_is_refused_with_every_known_one(tmp_path: Path, dummy: Dummy) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load(write(tmp_path, DUMMY_FILE.replace('"dummy"', '"telegraph"')), {"DUMMY_TOKEN": "x"})
    message = str(caught.value)
    assert "channels.0 (channel 'dm-1')" in message
    assert "'telegraph'" in message
    assert "'dingtalk', 'feishu', 'wukongim', 'zim', 'easemob', 'dummy'" in message


def test_check_config_accepts_the_platform_and_exits_11_on_its_errors(
    tmp_path: Path,
    dummy: Dummy,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUMMY_TOKEN", "s3cret-room")
    path = write(tmp_path, DUMMY_FILE)
    assert cli_main(["check-config", "--config", str(path)]) == 0
    assert "configuration OK" in capsys.readouterr().out
    write(tmp_path, DUMMY_FILE.replace('token = "${DUMMY_TOKEN}"', 'token = ""'))
    assert cli_main(["check-config", "--config", str(path)]) == EXIT_CONFIG_ERROR
    assert "channels.0.token (channel 'dm-1'): Value error, must not be empty" in (
        capsys.readouterr().err
    )


def test_unregistering_restores_the_schema_the_document_and_the_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (registry.names(), copy.deepcopy(openapi_document()), emulate_help(capsys))
    recorder = Dummy()
    registry.register(recorder.platform)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register(recorder.platform)
        assert registry.names() == (*before[0], DUMMY)
        assert openapi_document() != before[1]
        assert DUMMY in emulate_help(capsys)
    finally:
        registry.unregister(DUMMY)
    assert (registry.names(), openapi_document(), emulate_help(capsys)) == before
    with pytest.raises(
        ConfigurationError,
        match=r"expected tags: 'dingtalk', 'feishu', 'wukongim', 'zim', 'easemob'$",
    ):
        load(write(tmp_path, DUMMY_FILE), {"DUMMY_TOKEN": "x"})


# -- the OpenAPI document and the admin API -----------------------------------------------------


def test_the_openapi_document_describes_the_platform(dummy: Dummy) -> None:
    schemas = openapi_document()["components"]["schemas"]
    settings = schemas["ChannelSettings"]
    ref = "#/components/schemas/DummyChannelConfig"
    assert settings["discriminator"]["mapping"][DUMMY] == ref
    assert {"$ref": ref} in settings["oneOf"]
    form = schemas["DummyChannelConfig"]
    assert form["properties"]["type"]["const"] == DUMMY
    assert {"room", "token"} <= set(form["required"])
    # the web form shows a password field, and the server's emptiness rule is documented
    assert form["properties"]["token"]["format"] == "password"
    assert form["properties"]["token"]["minLength"] == 1
    assert form["properties"]["server"]["x-sends-secrets"] is True
    # the built-in platforms are still there, unchanged in name
    assert {"DingTalkChannelConfig", "FeishuChannelConfig"} <= set(schemas)


@pytest.fixture
async def daemon(tmp_path: Path, dummy: Dummy) -> AsyncIterator[Daemon]:
    """A daemon whose config file declares a dummy channel."""
    settings = validate(
        {
            "daemon": {"state_dir": str(tmp_path)},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
            "agents": {"default": {"type": "echo"}},
            "channels": [dummy_channel("dm-file", room="from-the-file")],
        }
    )
    running = Daemon(settings, backoff=FAST_BACKOFF)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def call(
    daemon: Daemon, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    assert daemon.admin is not None
    url = f"http://127.0.0.1:{daemon.admin.port}/api/v1{path}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as response,
    ):
        answer: dict[str, Any] = await response.json()
        return response.status, answer


async def test_the_daemon_serves_builds_and_validates_the_platform(
    daemon: Daemon, dummy: Dummy
) -> None:
    status, document = await call(daemon, "GET", "/openapi.json")
    assert status == 200
    assert "DummyChannelConfig" in document["components"]["schemas"]
    assert document == json.loads(json.dumps(openapi_document()))
    # the file's channel was built through the platform's factory, which refused it
    _, shown = await call(daemon, "GET", "/channels/dm-file")
    assert shown["type"] == DUMMY
    assert shown["status"]["state"] == "failed"
    assert "dummy room 'from-the-file' has no server" in shown["status"]["last_error"]
    assert [c.room for c in dummy.built] == ["from-the-file"]
    # the admin API validates a new channel against the platform's model
    status, created = await call(daemon, "POST", "/channels", dummy_channel("dm-api"))
    assert status == 201, created
    assert created["settings"]["token"] == "***"
    assert created["settings"]["room"] == "lobby"
    assert dummy.built[-1].token == SecretStr("dummy-token")
    status, refused = await call(daemon, "POST", "/channels", dummy_channel("dm-bad", room=""))
    assert status == 422
    assert [f["path"] for f in refused["error"]["fields"]] == ["room"]
    status, refused = await call(
        daemon, "POST", "/channels", {**dummy_channel("dm-x"), "type": "telegraph"}
    )
    assert status == 422
    assert (
        "'dingtalk', 'feishu', 'wukongim', 'zim', 'easemob', 'dummy'" in refused["error"]["message"]
    )


def test_the_provider_factory_is_chosen_by_type(dummy: Dummy) -> None:
    config = DummyChannelConfig.model_validate(dummy_channel())
    with pytest.raises(ConfigError, match="has no server"):
        registry.build_provider(config, sink=None, observer=None)  # type: ignore[arg-type]
    assert dummy.built == [config]
    with pytest.raises(ConfigError, match=r"'telegraph' is not supported \(known: .*dummy\)"):
        registry.get("telegraph")


# -- channeld emulate and channeld chat ---------------------------------------------------------


def test_emulate_lists_the_platform_and_loads_its_emulator_only_when_chosen(
    dummy: Dummy, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = emulate_help(capsys)
    assert DUMMY in listing
    assert DUMMY_EMULATOR_HELP in listing
    assert dummy.emulator_loads == 0
    assert "--rooms ROOMS" in emulate_help(capsys, DUMMY)
    assert dummy.emulator_loads == 1


# `channeld emulate` sets up the process's logging: run it in a process of its own
EMULATE_DUMMY = """
import sys
from channels import registry
from daemon.cli import main
from tests.registry_support import Dummy
registry.register(Dummy().platform)
sys.exit(main(sys.argv[1:]))
"""


def test_emulate_runs_the_platform_emulator_under_the_loopback_rule() -> None:
    def emulate(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", EMULATE_DUMMY, "emulate", DUMMY, *argv]
        return subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
        )

    ran = emulate("--rooms", "3", "--listen", "127.0.0.1:0")
    assert ran.returncode == 0, ran.stderr
    assert "dummy emulator: 3 room(s) on 127.0.0.1:0" in ran.stdout
    # the rule every emulator obeys: no authentication, so loopback only
    refused = emulate("--listen", "0.0.0.0:8000")
    assert refused.returncode == EXIT_CONFIG_ERROR
    assert "--listen must be" in refused.stderr
    assert "dummy emulator" not in refused.stdout


async def test_chat_takes_the_platform_and_its_default_emulator(
    dummy: Dummy, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    chat_arguments(parser)
    assert f"{DUMMY_EMULATOR_URL} with --platform {DUMMY}" in parser.format_help()
    args = parser.parse_args(["--platform", DUMMY])
    assert await chat_main(args) == 1  # nothing listens at the dummy's default address
    assert f"cannot reach the emulator at {DUMMY_EMULATOR_URL}" in capsys.readouterr().err


# -- the built-in platforms ---------------------------------------------------------------------


@pytest.mark.parametrize("platform", registry.platforms(), ids=registry.names())
def test_a_built_in_emulator_listens_where_chat_looks(platform: Any) -> None:
    assert platform.emulator is not None
    command = platform.emulator.command()
    assert platform.emulator.url == f"http://{command.DEFAULT_LISTEN}"


def test_the_demo_channel_is_a_channel_of_its_platform() -> None:
    platform, demo = registry.demo()
    channel = demo.channel("http://127.0.0.1:8788")
    assert isinstance(channel, platform.config)
    assert channel.type == platform.name
    assert platform.emulator is not None
    assert getattr(channel, platform.emulator.app_field) == demo.app
    assert isinstance(channel, DingTalkChannelConfig | FeishuChannelConfig)


def test_check_config_and_the_daemon_module_load_no_emulator_nor_sdk(tmp_path: Path) -> None:
    """Emulators load for `channeld emulate`, providers and their SDKs when a channel starts."""
    path = write(
        tmp_path,
        "[[channels]]\nid = 'd'\ntype = 'dingtalk'\nclient_id = 'c'\nclient_secret = 's'\n"
        "[[channels]]\nid = 'f'\ntype = 'feishu'\napp_id = 'a'\napp_secret = 's'\n",
    )
    script = f"""
import sys
from daemon.cli import build_parser, main
code = main(["check-config", "--config", {str(path)!r}])
import daemon.app
build_parser()
# of a platform's folder, only its package, config model and registry entry
roles = ("", ".config", ".platform")
light = {{f"channels.{{p}}{{r}}" for p in ("dingtalk", "feishu") for r in roles}}
heavy = ("channels.dingtalk", "channels.feishu", "channels.emulator", "dingtalk_stream")
print(code, sorted(m for m in sys.modules if m.startswith(heavy) and m not in light))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"
