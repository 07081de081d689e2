"""The configuration contract: TOML, ${VAR}, CHANNELD_* overrides, errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from channels.dingtalk.config import DingTalkChannelConfig
from channels.feishu.config import FeishuChannelConfig
from daemon.config import EXIT_CONFIG_ERROR, ConfigurationError, load

GOOD = """
[daemon]
database_url = "sqlite+aiosqlite:///${STATE}/x.db"

[admin]
listen = "127.0.0.1:0"
token = "${ADMIN_TOKEN:-fallback-token}"

[agents.default]
type = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key = "${LLM_KEY}"
model = "m"
fallback = "spare"

[agents.spare]
type = "echo"

[[channels]]
id = "dt-1"
type = "dingtalk"
agent = "default"
client_id = "cid"
client_secret = "${DT_SECRET}"
card_template_id = "tpl.schema"

[[channels]]
id = "fs-1"
type = "feishu"
app_id = "cli_0123456789abcdef"
app_secret = "${FS_SECRET}"
domain = "lark"
"""

ENV = {"STATE": "/tmp/st", "LLM_KEY": "sk-test", "DT_SECRET": "s3cret", "FS_SECRET": "f5ecret"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channeld.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_expands_variables(tmp_path: Path) -> None:
    settings = load(write(tmp_path, GOOD), ENV)
    assert settings.daemon.database_url == "sqlite+aiosqlite:////tmp/st/x.db"
    assert settings.admin.token is not None
    assert settings.admin.token.get_secret_value() == "fallback-token"
    feishu = settings.channels[1]
    assert isinstance(feishu, FeishuChannelConfig)
    assert feishu.base_url == "https://open.larksuite.com"
    assert feishu.app_secret.get_secret_value() == "f5ecret"
    channel = settings.channels[0]
    assert isinstance(channel, DingTalkChannelConfig)
    assert channel.client_secret.get_secret_value() == "s3cret"
    assert channel.api_base == "https://api.dingtalk.com"
    assert "s3cret" not in repr(settings)


def test_env_override_wins_over_the_file(tmp_path: Path) -> None:
    env = ENV | {
        "CHANNELD_ADMIN__LISTEN": "127.0.0.1:9999",
        "CHANNELD_CHANNELS__0__ENABLED": "false",
    }
    settings = load(write(tmp_path, GOOD), env)
    assert settings.admin.port == 9999
    assert settings.channels[0].enabled is False


def test_sdk_endpoint_variable_sets_the_default_api_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DINGTALK_OPENAPI_ENDPOINT", "http://127.0.0.1:5555")
    settings = load(write(tmp_path, GOOD), ENV)
    channel = settings.channels[0]
    assert isinstance(channel, DingTalkChannelConfig)
    assert channel.api_base == "http://127.0.0.1:5555"


def test_missing_variable_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"channels\.0\.client_secret: .*DT_SECRET"):
        load(write(tmp_path, GOOD), {k: v for k, v in ENV.items() if k != "DT_SECRET"})


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (('type = "dingtalk"', 'type = "telegraph"'), r"channels\.0"),
        (('client_id = "cid"', 'client_id = "cid"\ncolour = "red"'), r"channels\.0\.colour .*dt-1"),
        (('model = "m"', 'model = ""'), r"agents\.default\.model"),
        (('agent = "default"', 'agent = "nobody"'), r"channels\.0\.agent: unknown agent 'nobody'"),
        (('fallback = "spare"', 'fallback = "ghost"'), r"agents\.default\.fallback"),
        (('listen = "127.0.0.1:0"', 'listen = "nowhere"'), r"admin\.listen"),
        (('client_secret = "${DT_SECRET}"', 'client_secret = ""'), r"channels\.0\.client_secret"),
        (('domain = "lark"', 'domain = "larksuite"'), r"channels\.1\.domain .*fs-1"),
        (('app_secret = "${FS_SECRET}"', 'app_secret = ""'), r"channels\.1\.app_secret"),
    ],
)
def test_errors_name_the_offending_key(
    tmp_path: Path, mutation: tuple[str, str], expected: str
) -> None:
    old, new = mutation
    assert old in GOOD
    with pytest.raises(ConfigurationError, match=expected):
        load(write(tmp_path, GOOD.replace(old, new, 1)), ENV)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load(write(tmp_path, "[daemon\n"), ENV)


def test_duplicate_channel_ids_rejected(tmp_path: Path) -> None:
    channel = GOOD[GOOD.index("[[channels]]") :]
    with pytest.raises(ConfigurationError, match="duplicate channel id 'dt-1'"):
        load(write(tmp_path, GOOD + channel), ENV)


def test_embedded_defaults_pick_echo_without_llm_and_openai_with_it() -> None:
    assert load(None, {}).agents["default"].type == "echo"
    settings = load(None, {"LLM_BASE_URL": "http://127.0.0.1:1/v1", "LLM_API_KEY": "k"})
    assert settings.agents["default"].type == "openai"
    assert settings.emulator.enabled


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "channeld.example.toml"
    settings = load(example, {})
    assert settings.emulator.enabled
    assert settings.agents["default"].type == "echo"


def test_check_config_exits_11_and_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('model = "m"', 'model = ""'))
    env = {**ENV, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "agents.default.model" in result.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "daemon", "check-config", "--config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "2 channel(s)" in ok.stdout


def test_fallback_cycle_is_a_config_error(tmp_path: Path) -> None:
    text = GOOD.replace('type = "echo"', 'type = "echo"\nfallback = "default"')
    with pytest.raises(ConfigurationError, match="cycle"):
        load(write(tmp_path, text), ENV)


def test_admin_beyond_loopback_requires_a_token(tmp_path: Path) -> None:
    exposed = GOOD.replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:8787"')
    no_token = exposed.replace('token = "${ADMIN_TOKEN:-fallback-token}"', "")
    with pytest.raises(ConfigurationError, match=r"admin: .*token is required"):
        load(write(tmp_path, no_token), ENV)
    assert load(write(tmp_path, exposed), ENV).admin.host == "0.0.0.0"  # noqa: S104
