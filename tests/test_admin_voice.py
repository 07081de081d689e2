"""A channel's nested `[channels.voice]` section through the admin plane: secrets write-only at
every depth (sealed at rest, `***` out, kept unless given, refused when empty), a PATCH merged
into the section, the endpoints that decide where a section's secrets go, the console URLs, the
CLI's view and check-config's words. A real daemon (its channel on the DingTalk emulator) and a
real aiohttp client; the database row is read back to see what is stored.
"""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.dingtalk.config import DingTalkChannelConfig
from channels.dingtalk.emulator import EmulatorThread
from channels.manager import public_error, spec_digest
from channels.registry import channel_config
from daemon.app import Daemon
from daemon.channel_service import SEALED, ApiError, merge_patch
from daemon.config import EXIT_CONFIG_ERROR, ConfigurationError, validate
from daemon.openapi import CHANNEL_EXAMPLE, openapi_document
from daemon.secrets import MASK, SecretBox
from daemon.settings_paths import MISSING, get, leaves, secret_paths
from daemon.settings_paths import Path as SettingPath
from tests.dingtalk_support import DINGTALK_CLIENT_ID, DINGTALK_CLIENT_SECRET, dingtalk_emulator
from tests.e2e_support import FAST_BACKOFF, settings_for

__all__ = ["dingtalk_emulator"]

TOKEN = "admin-token-voice"
ZEGO_SECRET = "zego-server-secret-1f3a"
ZEGO_CALLBACK = "zego-callback-secret-77b0"
AK_SECRET = "aliyun-ak-secret-9c2e"
LLM_KEY = "aliyun-llm-key-5d1b"
CB_TOKEN = "aliyun-callback-token-0a4f"
NEW_SECRET = "rotated-voice-secret-3e8d"
PLAINTEXTS = (ZEGO_SECRET, ZEGO_CALLBACK, AK_SECRET, LLM_KEY, CB_TOKEN, DINGTALK_CLIENT_SECRET)
PUBLIC = "https://bot.example.com"
TTS = {"Vendor": "CosyVoice", "Params": {"voice": "longxiaochun"}}
# the TTS object too: it may carry a vendor's token, and it goes to ZEGO's api_base
ZEGO_SECRETS = ["voice.zego.callback_secret", "voice.zego.server_secret", "voice.zego.tts"]
ALIYUN_SECRETS = [
    "voice.aliyun.access_key_secret",
    "voice.aliyun.callback_token",
    "voice.aliyun.llm_api_key",
]
VOICE_SECRETS: list[SettingPath] = [
    ("voice", "zego", "server_secret"),
    ("voice", "zego", "callback_secret"),
    ("voice", "aliyun", "access_key_secret"),
    ("voice", "aliyun", "llm_api_key"),
    ("voice", "aliyun", "callback_token"),
]


def voice_section() -> dict[str, Any]:
    return {
        "public_base_url": PUBLIC,
        "max_call_seconds": 1800,
        "zego": {
            "app_id": 1234567890,
            "server_secret": ZEGO_SECRET,
            "callback_secret": ZEGO_CALLBACK,
            "api_base": "https://aigc-aiagent-api.zegotech.cn",
            "tts": copy.deepcopy(TTS),
        },
        "aliyun": {
            "access_key_id": "LTAI-test-id",
            "access_key_secret": AK_SECRET,
            "agent_id": "agent-1",
            "llm_api_key": LLM_KEY,
            "callback_token": CB_TOKEN,
        },
    }


class Admin:
    """Bearer-token JSON calls to the daemon's admin API, and its database behind."""

    def __init__(self, http: aiohttp.ClientSession, daemon: Daemon) -> None:
        assert daemon.admin is not None
        self.base = f"http://127.0.0.1:{daemon.admin.port}/api/v1"
        self.http = http
        self.daemon = daemon

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            return r.status, await r.json() if r.content_type == "application/json" else None

    async def spec(self, channel_id: str) -> dict[str, Any]:
        """The stored row's settings, as they are in the database."""
        assert self.daemon.store is not None
        record = await self.daemon.store.get_channel(channel_id)
        assert record is not None
        return dict(record.spec)

    async def decoded(self, channel_id: str) -> DingTalkChannelConfig:
        """The settings the provider gets: secrets decrypted."""
        assert self.daemon.store is not None and self.daemon.channels is not None
        record = await self.daemon.store.get_channel(channel_id)
        assert record is not None
        config = self.daemon.channels.decode(record)
        assert isinstance(config, DingTalkChannelConfig)
        return config


@pytest.fixture
async def admin(tmp_path: Path, dingtalk_emulator: EmulatorThread) -> AsyncIterator[Admin]:
    """A daemon whose config-file channel `dt` has a voice section; the API creates more."""
    base = settings_for(tmp_path, dingtalk_emulator.url, None).model_dump(mode="python")
    data = {
        "daemon": {"state_dir": str(tmp_path), "log_level": "DEBUG"},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "webhooks": {"listen": "127.0.0.1:0"},
        "agents": {"default": {"type": "echo", "delay": 0.01}},
        "channels": [
            {
                **base["channels"][0],
                "client_secret": DINGTALK_CLIENT_SECRET,
                "voice": voice_section(),
            }
        ],
    }
    daemon = Daemon(validate(data), backoff=FAST_BACKOFF)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Admin(http, daemon)
    finally:
        await daemon.stop()


def api_channel(emulator: EmulatorThread, **overrides: Any) -> dict[str, Any]:
    body = {
        "id": "api-1",
        "type": "dingtalk",
        "client_id": DINGTALK_CLIENT_ID,
        "client_secret": DINGTALK_CLIENT_SECRET,
        "card_template_id": "tpl.ai.schema",
        "api_base": emulator.url,
        "voice": voice_section(),
    }
    body.update(overrides)
    return body


def assert_masked(voice: dict[str, Any]) -> None:
    for path in VOICE_SECRETS:
        assert get({"voice": voice}, path) == MASK, path


def assert_no_plaintext(*texts: object, secrets: tuple[str, ...] = PLAINTEXTS) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in str(text)


async def create(admin: Admin, emulator: EmulatorThread, **overrides: Any) -> dict[str, Any]:
    status, view = await admin.call("POST", "/channels", api_channel(emulator, **overrides))
    assert status == 201, view
    return dict(view)


async def test_voice_secrets_are_sealed_at_rest_and_masked_in_every_view(
    admin: Admin, dingtalk_emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create(admin, dingtalk_emulator)
    voice = created["settings"]["voice"]
    assert_masked(voice)
    assert voice["zego"]["tts"] == MASK  # a provider's object may carry a vendor's token
    assert voice["aliyun"]["access_key_id"] == "LTAI-test-id"  # not a secret: shown
    assert created["voice_urls"] == {
        "llm_endpoint": f"{PUBLIC}/voice/api-1/chat/completions",
        "aliyun_llm_base": f"{PUBLIC}/voice/api-1",
        "callback": f"{PUBLIC}/hooks/api-1/voice",
    }

    # at rest: each secret sealed at its own place, no plaintext anywhere in the row
    spec = await admin.spec("api-1")
    assert_no_plaintext(spec)
    for path in [("client_secret",), *VOICE_SECRETS]:
        sealed = get(spec["settings"], path)
        assert isinstance(sealed, dict) and set(sealed) == {SEALED}, path
    # and the provider gets them back
    config = await admin.decoded("api-1")
    assert config.voice is not None and config.voice.zego is not None
    assert config.voice.aliyun is not None
    assert config.voice.zego.server_secret.get_secret_value() == ZEGO_SECRET
    assert config.voice.zego.callback_key() == ZEGO_CALLBACK
    assert config.voice.aliyun.access_key_secret.get_secret_value() == AK_SECRET
    assert config.voice.aliyun.llm_api_key.get_secret_value() == LLM_KEY
    assert config.voice.aliyun.callback_token.get_secret_value() == CB_TOKEN

    _, fetched = await admin.call("GET", "/channels/api-1")
    _, listed = await admin.call("GET", "/channels")
    assert_masked(fetched["settings"]["voice"])
    assert_no_plaintext(created, fetched, listed, caplog.text)


async def test_a_patch_merges_into_the_voice_section_and_keeps_its_secrets(
    admin: Admin, dingtalk_emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await create(admin, dingtalk_emulator)
    # omitted, *** and null all keep a stored secret; the rest of each section stays
    patch = {
        "voice": {
            "max_call_seconds": 600,
            "zego": {"window_size": 2, "server_secret": MASK},
            "aliyun": {"llm_api_key": None},
        }
    }
    status, view = await admin.call("PATCH", "/channels/api-1", patch)
    assert status == 200, view
    assert_masked(view["settings"]["voice"])
    config = await admin.decoded("api-1")
    assert config.voice is not None and config.voice.zego is not None
    assert config.voice.aliyun is not None
    assert config.voice.max_call_seconds == 600
    assert config.voice.public_base_url == PUBLIC
    assert config.voice.zego.window_size == 2
    assert config.voice.zego.app_id == 1234567890
    assert config.voice.zego.tts_object() == TTS
    assert config.voice.zego.server_secret.get_secret_value() == ZEGO_SECRET
    assert config.voice.zego.callback_key() == ZEGO_CALLBACK
    assert config.voice.aliyun.llm_api_key.get_secret_value() == LLM_KEY
    assert config.voice.aliyun.callback_token.get_secret_value() == CB_TOKEN

    # a provider's object is one secret value: replaced whole, never shown
    tts: dict[str, Any] = {"tts": {"Vendor": "ByteDance"}}
    status, view = await admin.call("PATCH", "/channels/api-1", {"voice": {"zego": tts}})
    assert status == 200, view
    assert view["settings"]["voice"]["zego"]["tts"] == MASK
    replaced = await admin.decoded("api-1")
    assert replaced.voice is not None and replaced.voice.zego is not None
    assert replaced.voice.zego.tts_object() == {"Vendor": "ByteDance"}

    # one secret replaced, the others kept
    status, view = await admin.call(
        "PATCH", "/channels/api-1", {"voice": {"aliyun": {"llm_api_key": NEW_SECRET}}}
    )
    assert status == 200, view
    config = await admin.decoded("api-1")
    assert config.voice is not None and config.voice.aliyun is not None
    assert config.voice.zego is not None
    assert config.voice.aliyun.llm_api_key.get_secret_value() == NEW_SECRET
    assert config.voice.aliyun.access_key_secret.get_secret_value() == AK_SECRET
    assert config.voice.zego.server_secret.get_secret_value() == ZEGO_SECRET
    assert_no_plaintext(view, await admin.spec("api-1"), secrets=(NEW_SECRET,))

    # an empty secret is an error naming its path; nothing is stored
    version = view["version"]
    status, error = await admin.call(
        "PATCH", "/channels/api-1", {"voice": {"zego": {"server_secret": ""}}}
    )
    assert status == 422
    assert error["error"]["fields"][0]["path"] == "voice.zego.server_secret"
    assert "must not be empty" in error["error"]["message"]
    _, unchanged = await admin.call("GET", "/channels/api-1")
    assert unchanged["version"] == version

    # null removes a section, its secrets with it; the URLs follow
    status, view = await admin.call("PATCH", "/channels/api-1", {"voice": {"zego": None}})
    assert status == 200, view
    assert view["settings"]["voice"]["zego"] is None
    assert view["voice_urls"]["aliyun_llm_base"] == f"{PUBLIC}/voice/api-1"
    spec = await admin.spec("api-1")
    assert get(spec["settings"], ("voice", "zego")) is None
    assert get(spec["settings"], ("voice", "aliyun", "access_key_secret")) is not MISSING
    # a voice section needs one cloud: the model says so, at the section's path
    status, error = await admin.call("PATCH", "/channels/api-1", {"voice": {"aliyun": None}})
    assert status == 422
    assert error["error"]["fields"][0]["path"] == "voice"
    status, view = await admin.call("PATCH", "/channels/api-1", {"voice": None})
    assert status == 200, view
    assert view["settings"]["voice"] is None
    assert "voice_urls" not in view
    assert {"/".join(p) for p in sealed_paths_of(await admin.spec("api-1"))} == {"client_secret"}

    # a section added again brings its secrets: *** keeps nothing there
    again = {"voice": {"public_base_url": PUBLIC, "zego": {"app_id": 7, "server_secret": MASK}}}
    status, error = await admin.call("PATCH", "/channels/api-1", again)
    assert status == 422
    assert error["error"]["fields"][0]["path"] == "voice.zego.server_secret"
    assert_no_plaintext(caplog.text, secrets=(*PLAINTEXTS, NEW_SECRET))


def sealed_paths_of(spec: dict[str, Any]) -> set[SettingPath]:
    return leaves(spec["settings"], lambda value: SEALED in value)


async def test_moving_where_a_voice_section_signs_needs_that_sections_secrets(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    await create(admin, dingtalk_emulator)
    elsewhere = "https://aigc-aiagent-api-sgp.zegotech.cn"

    status, error = await admin.call(
        "PATCH", "/channels/api-1", {"voice": {"zego": {"api_base": elsewhere}}}
    )
    assert status == 409, error
    assert error["error"]["code"] == "secret_required"
    assert [f["path"] for f in error["error"]["fields"]] == ZEGO_SECRETS  # not Alibaba's
    assert (
        "voice.zego.api_base decides where the channel's secrets are sent"
        in (error["error"]["message"])
    )
    # one of them is not enough
    status, error = await admin.call(
        "PATCH",
        "/channels/api-1",
        {"voice": {"zego": {"api_base": elsewhere, "server_secret": NEW_SECRET}}},
    )
    assert status == 409
    missing = [f["path"] for f in error["error"]["fields"]]
    assert missing == ["voice.zego.callback_secret", "voice.zego.tts"]
    spec = await admin.spec("api-1")
    assert get(spec["settings"], ("voice", "zego", "api_base")) != elsewhere

    status, error = await admin.call(
        "PATCH", "/channels/api-1", {"voice": {"aliyun": {"endpoint": "ice.elsewhere.example"}}}
    )
    assert status == 409
    assert [f["path"] for f in error["error"]["fields"]] == ALIYUN_SECRETS
    # the channel's own endpoint asks for the channel's own secret, not the voice ones
    status, error = await admin.call(
        "PATCH", "/channels/api-1", {"api_base": "https://api.dingtalk.example"}
    )
    assert status == 409
    assert [f["path"] for f in error["error"]["fields"]] == ["client_secret"]

    # where the clouds reach channeld is where ZEGO sends each call's secret and the caller's
    # words: it moves only with every voice secret given again
    moved = "https://voice.example.org"
    status, error = await admin.call(
        "PATCH", "/channels/api-1", {"voice": {"public_base_url": moved}}
    )
    assert status == 409, error
    assert sorted(f["path"] for f in error["error"]["fields"]) == ALIYUN_SECRETS + ZEGO_SECRETS
    every = {
        "public_base_url": moved,
        "zego": {"server_secret": ZEGO_SECRET, "callback_secret": ZEGO_CALLBACK, "tts": TTS},
        "aliyun": {
            "access_key_secret": AK_SECRET,
            "llm_api_key": LLM_KEY,
            "callback_token": CB_TOKEN,
        },
    }
    status, view = await admin.call("PATCH", "/channels/api-1", {"voice": every})
    assert status == 200, view
    assert view["voice_urls"]["callback"] == f"{moved}/hooks/api-1/voice"

    # with the section's secrets given again, each endpoint moves
    status, view = await admin.call(
        "PATCH",
        "/channels/api-1",
        {
            "voice": {
                "zego": {
                    "api_base": elsewhere,
                    "server_secret": NEW_SECRET,
                    "callback_secret": ZEGO_CALLBACK,
                    "tts": TTS,
                },
                "aliyun": {
                    "endpoint": "http://127.0.0.1:9",  # an emulator's: http on loopback
                    "access_key_secret": AK_SECRET,
                    "llm_api_key": LLM_KEY,
                    "callback_token": CB_TOKEN,
                },
            }
        },
    )
    assert status == 200, view
    config = await admin.decoded("api-1")
    assert config.voice is not None and config.voice.zego is not None
    assert config.voice.aliyun is not None
    assert config.voice.zego.api_base == elsewhere
    assert config.voice.zego.server_secret.get_secret_value() == NEW_SECRET
    assert config.voice.aliyun.endpoint == "http://127.0.0.1:9"


async def test_a_voice_secret_the_key_cannot_open_must_be_given_again(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    await create(admin, dingtalk_emulator)
    assert admin.daemon.store is not None
    record = await admin.daemon.store.get_channel("api-1")
    assert record is not None
    foreign = SecretBox(Fernet.generate_key()).seal("sealed under another key")
    spec = copy.deepcopy(dict(record.spec))
    spec["settings"]["voice"]["zego"]["server_secret"] = {SEALED: foreign}
    await admin.daemon.store.upsert_channel(
        "api-1", type=record.type, agent=record.agent, enabled=False, source="api", spec=spec
    )

    status, error = await admin.call(
        "PATCH", "/channels/api-1", {"voice": {"max_call_seconds": 60}}
    )
    assert status == 409
    assert [f["path"] for f in error["error"]["fields"]] == ["voice.zego.server_secret"]
    assert "does not decrypt with the current key" in error["error"]["message"]
    # a section that goes needs none of its secrets
    status, view = await admin.call("PATCH", "/channels/api-1", {"voice": {"zego": None}})
    assert status == 200, view
    config = await admin.decoded("api-1")
    assert config.voice is not None and config.voice.zego is None


async def test_create_refuses_placeholders_empty_secrets_and_the_storage_marker(
    admin: Admin, dingtalk_emulator: EmulatorThread
) -> None:
    def with_voice(section: str, **changes: Any) -> dict[str, Any]:
        voice = voice_section()
        voice[section].update(changes)
        return api_channel(dingtalk_emulator, voice=voice)

    refused = [
        (with_voice("zego", server_secret=MASK), "voice.zego.server_secret", "'***'"),
        (with_voice("aliyun", callback_token=""), "voice.aliyun.callback_token", "must not be"),
        (with_voice("zego", tts={"x": {SEALED: "gAAAA"}}), f"voice.zego.tts.x.{SEALED}", SEALED),
    ]
    missing = voice_section()
    del missing["aliyun"]["callback_token"]
    refused.append(
        (api_channel(dingtalk_emulator, voice=missing), "voice.aliyun.callback_token", "required")
    )
    for body, path, words in refused:
        status, error = await admin.call("POST", "/channels", body)
        assert status == 422, (path, error)
        assert error["error"]["fields"][0]["path"] == path
        assert words in error["error"]["message"]
        assert_no_plaintext(error)
    assert (await admin.call("GET", "/channels/api-1"))[0] == 404


async def test_a_config_file_voice_section_is_masked_and_read_only(admin: Admin) -> None:
    status, view = await admin.call("GET", "/channels/dt")
    assert status == 200
    assert view["source"] == "config"
    assert_masked(view["settings"]["voice"])
    assert view["settings"]["client_secret"] == MASK
    assert view["voice_urls"]["llm_endpoint"] == f"{PUBLIC}/voice/dt/chat/completions"
    status, error = await admin.call("PATCH", "/channels/dt", {"voice": {"max_call_seconds": 60}})
    assert status == 409
    assert error["error"]["code"] == "managed_by_config"
    assert_no_plaintext(view, await admin.spec("dt"))


def test_the_document_shows_secrets_as_write_only_and_the_voice_urls() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert schemas["Channel"]["properties"]["voice_urls"] == {
        "$ref": "#/components/schemas/VoiceUrls"
    }
    assert set(schemas["VoiceUrls"]["properties"]) == {
        "llm_endpoint",
        "aliyun_llm_base",
        "callback",
    }
    # the nested secrets are password fields that may not be empty, like the top-level ones
    for model, name in [("ZegoVoice", "server_secret"), ("AliyunVoice", "callback_token")]:
        prop = schemas[model]["properties"][name]
        assert prop["writeOnly"] is True and prop["format"] == "password"
        assert prop["minLength"] == 1
    # the example answer masks every secret of the model it shows
    example = CHANNEL_EXAMPLE["settings"]
    shown = [
        p for p in secret_paths(DingTalkChannelConfig) if get(example, p) not in (MISSING, None)
    ]
    assert len(shown) == 5  # the channel's own, ZEGO's server secret, Alibaba's three
    assert all(get(example, p) == MASK for p in shown)


# -- the merge, as a property: whatever the patch, secrets move only when given ------------------

SECRET_VALUES = st.sampled_from([None, MASK, "", "given-secret"])
ANY_VALUE = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
)


def section_patch(secrets: list[str], others: list[str]) -> st.SearchStrategy[Any]:
    keys = dict.fromkeys(secrets, SECRET_VALUES) | dict.fromkeys(others, ANY_VALUE)
    return st.one_of(st.none(), ANY_VALUE, st.fixed_dictionaries({}, optional=keys))


PATCHES = st.fixed_dictionaries(
    {},
    optional={
        "client_secret": SECRET_VALUES,
        "card_template_id": ANY_VALUE,
        "voice": st.one_of(
            st.none(),
            ANY_VALUE,
            st.fixed_dictionaries(
                {},
                optional={
                    "max_call_seconds": ANY_VALUE,
                    "zego": section_patch(["server_secret", "callback_secret"], ["api_base"]),
                    "aliyun": section_patch(
                        ["access_key_secret", "llm_api_key", "callback_token"], ["endpoint"]
                    ),
                },
            ),
        ),
    },
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(patch=PATCHES)
def test_a_merged_patch_moves_a_secret_only_when_it_is_given(patch: dict[str, Any]) -> None:
    stored = api_channel_settings()
    sealed = {("client_secret",), *VOICE_SECRETS}
    outcome = merge_or_refusal(stored, patch, sealed)
    if isinstance(outcome, ApiError):
        assert outcome.status == 422
        assert outcome.fields and outcome.fields[0]["path"]
        return
    merged, given_paths = outcome
    for path in sealed:
        section = get(merged, path[:-1])
        if not isinstance(section, dict):
            continue  # removed or replaced by the patch: validation judges what is left
        sent = get(patch, path)
        if path in given_paths:
            assert sent == get(merged, path) == "given-secret"
        else:
            assert sent in (MISSING, None, MASK)
            assert get(merged, path) == get(stored, path)  # kept, whatever else changed


def merge_or_refusal(
    stored: dict[str, Any], patch: dict[str, Any], sealed: set[SettingPath]
) -> tuple[dict[str, Any], set[SettingPath]] | ApiError:
    try:
        return merge_patch(stored, patch, DingTalkChannelConfig, sealed)
    except ApiError as exc:
        return exc


def api_channel_settings() -> dict[str, Any]:
    voice = voice_section()
    return {
        "id": "api-1",
        "type": "dingtalk",
        "client_id": DINGTALK_CLIENT_ID,
        "client_secret": DINGTALK_CLIENT_SECRET,
        "card_template_id": "tpl.ai.schema",
        "voice": voice,
    }


# -- check-config ---------------------------------------------------------------------------------


def config_with_voice(voice: dict[str, Any], webhooks: str = "127.0.0.1:8789") -> dict[str, Any]:
    return {
        "webhooks": {"listen": webhooks},
        "agents": {"default": {"type": "echo"}},
        "channels": [
            {
                "id": "dt",
                "type": "dingtalk",
                "client_id": "cid",
                "client_secret": "secret",
                "card_template_id": "tpl",
                "voice": voice,
            }
        ],
    }


def config_error(voice: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        validate(config_with_voice(voice))
    return str(caught.value)


def test_check_config_names_each_bad_voice_key_by_its_path() -> None:
    missing = voice_section()
    del missing["aliyun"]["callback_token"]
    assert "channels.0.voice.aliyun.callback_token (channel 'dt'): Field required" in config_error(
        missing
    )
    empty = voice_section()
    empty["zego"]["server_secret"] = ""
    assert "channels.0.voice.zego.server_secret (channel 'dt'): must not be empty" in config_error(
        empty
    )
    unknown = voice_section()
    unknown["zego"]["secret"] = "typo"
    assert "channels.0.voice.zego.secret (channel 'dt'): Extra inputs" in config_error(unknown)
    neither = {"public_base_url": PUBLIC}
    assert "channels.0.voice (channel 'dt'): Value error, [channels.voice] needs" in config_error(
        neither
    )
    clear = {**voice_section(), "public_base_url": "http://bot.example.com"}
    assert "channels.0.voice.public_base_url (channel 'dt'): Value error, must be an https" in (
        config_error(clear)
    )


def test_check_config_accepts_a_proxy_in_front_and_an_emulator_on_loopback(
    tmp_path: Path,
) -> None:
    # a loopback listener behind a reverse proxy that the clouds reach by name: nothing to say
    behind_proxy = validate(config_with_voice(voice_section(), webhooks="127.0.0.1:8789"))
    assert behind_proxy.channels[0].voice is not None
    # an emulator calling over plain http on this machine
    local = validate(
        config_with_voice({**voice_section(), "public_base_url": "http://127.0.0.1:8789"})
    )
    voice = local.channels[0].voice
    assert voice is not None
    assert voice.callback_url("dt") == "http://127.0.0.1:8789/hooks/dt/voice"
    # and the command says only that the file is fine
    path = tmp_path / "channeld.toml"
    path.write_text(
        f"""
[webhooks]
listen = "127.0.0.1:8789"

[agents.default]
type = "echo"

[[channels]]
id = "dt"
type = "dingtalk"
client_id = "cid"
client_secret = "secret"
card_template_id = "tpl"

[channels.voice]
public_base_url = "{PUBLIC}"

[channels.voice.zego]
app_id = 1234567890
server_secret = "${{ZEGO_SERVER_SECRET}}"
""",
        encoding="utf-8",
    )
    env = {"PATH": "/usr/bin:/bin", "ZEGO_SERVER_SECRET": ZEGO_SECRET, "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "daemon", "check-config", "--config", str(path)]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("configuration OK")
    assert ZEGO_SECRET not in result.stdout
    # the secret's variable empty, then unset: the nested key is named either way
    for value, words in [
        ("", "channels.0.voice.zego.server_secret (channel 'dt'): must not be empty"),
        (None, "channels.0.voice.zego.server_secret: environment variable ZEGO_SERVER_SECRET"),
    ]:
        env.pop("ZEGO_SERVER_SECRET", None)
        if value is not None:
            env["ZEGO_SERVER_SECRET"] = value
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, check=False, timeout=60
        )
        assert result.returncode == EXIT_CONFIG_ERROR
        assert words in result.stderr


def test_a_nested_secret_is_masked_in_errors_and_changes_the_settings_digest() -> None:
    """The manager's status errors and its config-file digest see secrets at any depth."""

    def channel(zego_secret: str) -> Any:
        return channel_config().validate_python(
            {
                "id": "x",
                "type": "dingtalk",
                "client_id": "a",
                "client_secret": "top-secret",
                "card_template_id": "t",
                "voice": {
                    "public_base_url": "https://bot.example.com",
                    "zego": {"app_id": 1, "server_secret": zego_secret},
                },
            }
        )

    first = channel("zego-secret-1")
    assert public_error("refused top-secret and zego-secret-1", first) == "refused *** and ***"
    key = b"k" * 32
    assert spec_digest(first, key) != spec_digest(channel("zego-secret-2"), key)
