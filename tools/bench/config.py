"""Scenario settings and the channeld configuration files the benchmark generates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = "tpl.bench.schema"
SECRET = "bench-secret"  # noqa: S105 - the emulator's throwaway credential for benchmark apps
MODEL = "fake-model"
WUKONGIM_BOT = "aibot"
WUKONGIM_TOKEN = "bench-manager-token"  # noqa: S105 - the WuKongIM emulator's throwaway token
WEBHOOK_KEY = "bench-webhook-key-0123456789"  # the hook URL's secret, as the README recommends
ZIM_APP_ID = "1234567890"
ZIM_SECRET = "bench0123456789abcdef0123456789ab"  # noqa: S105 - the ZIM emulator's throwaway
ZIM_ROBOT = "@RBT#bench"
EASEMOB_CLIENT_ID = "YXA6bench-client-id"
EASEMOB_SECRET = "bench-easemob-secret"  # noqa: S105 - the Easemob emulator's throwaway
EASEMOB_CALLBACK_SECRET = "bench-callback-secret"  # noqa: S105 - likewise
EASEMOB_BOT = "aibot"


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """Everything that sizes a run; `quick()` shrinks each scenario, keeping its shape."""

    # messages per second, one step each; a target stops after its first step that did not hold
    rates: tuple[float, ...] = (10, 20, 30, 40, 60, 80, 120, 160, 200)
    # Load is spread over this many apps (channels), so that the per-channel card budget (20
    # updates/s, about three per reply) does not cap scenario a; scenario d is about the budget.
    load_channels: int = 50
    warmup_rate: float = 10.0  # one unrecorded step first: imports, connections, caches
    warmup_seconds: float = 3.0
    step_seconds: float = 10.0
    drain_seconds: float = 15.0  # wait for the last replies after a step
    reference_rate: float = 200.0  # the goals' rate for ack latency and loop lag
    burst_seconds: float = 2.0  # a burst at reference_rate for every target, whatever it sustains
    burst_drain_seconds: float = 90.0
    words: int = 24  # words in a user message; the echo answer has one token more
    first_token_delay: float = 0.3
    token_interval: float = 0.02
    scale_channels: tuple[int, ...] = (100, 500, 1000)
    idle_seconds: float = 35.0  # longer than the emulator's 30 s ping interval
    connect_timeout: float = 180.0
    streams: int = 50
    stream_words: int = 120
    card_update_interval: float = 0.3
    card_updates_per_second: float = 20.0
    # scenario e: callbacks POSTed to the callback listener (issue 12: p99 < 50 ms at 50/s)
    callback_rate: float = 50.0
    callback_seconds: float = 10.0  # one message per callback
    callback_batch: int = 10  # messages per callback in the batch burst (burst_seconds long)
    callback_drain_seconds: float = 120.0  # for channeld's answers before the next phase
    # WuKongIM end to end: msgNotifyEventPushInterval (the server's default is 0.5 s), and the
    # one channel's update budget, as high as the config allows: the DingTalk load spreads over
    # many apps, 20 updates/s each, while a WuKongIM server pushes to one webhook (one channel)
    push_interval: float = 0.05
    wukongim_updates_per_second: float = 200.0
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> BenchSettings:
        """Every scenario at small scale: the whole run well under two minutes."""
        return cls(
            rates=(10, 30),
            burst_seconds=1.0,
            burst_drain_seconds=30.0,
            load_channels=10,
            step_seconds=3.0,
            drain_seconds=6.0,
            reference_rate=60.0,
            scale_channels=(10, 50, 100),
            idle_seconds=4.0,
            connect_timeout=60.0,
            streams=10,
            stream_words=60,
            callback_seconds=5.0,
            callback_drain_seconds=60.0,
            quick=True,
        )


def app_ids(prefix: str, count: int) -> list[str]:
    """Client ids of `count` emulator apps, stable across runs."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


def emulator_app_args(client_ids: list[str]) -> list[str]:
    """`channeld emulate dingtalk` arguments declaring the apps."""
    args: list[str] = []
    for client_id in client_ids:
        args += ["--app", f"{client_id}:{SECRET}"]
    return args


def _toml(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def _common(*, state_dir: Path, admin_listen: str, llm_url: str, log_level: str) -> list[str]:
    """The daemon, admin, emulator and agent sections every benchmark daemon shares."""
    return [
        "[daemon]",
        f"state_dir = {_toml(str(state_dir))}",
        f"log_level = {_toml(log_level)}",
        "graceful_timeout = 2",
        "",
        "[admin]",
        f"listen = {_toml(admin_listen)}",
        "",
        "[emulator]",
        "enabled = false",
        "",
        "[agents.bench]",
        'type = "openai"',
        f"base_url = {_toml(llm_url)}",
        'api_key = "bench"',
        f"model = {_toml(MODEL)}",
        "",
    ]


def daemon_config(
    *,
    state_dir: Path,
    admin_listen: str,
    api_base: str,
    llm_url: str,
    client_ids: list[str],
    card_update_interval: float = 0.3,
    card_updates_per_second: float = 20.0,
    log_level: str = "WARNING",
) -> str:
    """A channeld TOML file: one DingTalk channel per client id, all answering through the LLM."""
    lines = _common(
        state_dir=state_dir, admin_listen=admin_listen, llm_url=llm_url, log_level=log_level
    )
    for client_id in client_ids:
        lines += [
            "[[channels]]",
            f"id = {_toml(client_id)}",
            'type = "dingtalk"',
            'agent = "bench"',
            f"client_id = {_toml(client_id)}",
            f"client_secret = {_toml(SECRET)}",
            f"card_template_id = {_toml(TEMPLATE)}",
            f"api_base = {_toml(api_base)}",
            f"card_update_interval = {_toml(card_update_interval)}",
            f"card_updates_per_second = {_toml(card_updates_per_second)}",
            "",
        ]
    return "\n".join(lines)


def _webhook_daemon(
    *, state_dir: Path, admin_listen: str, webhooks_listen: str, llm_url: str, log_level: str
) -> list[str]:
    """The common sections and the callback listener."""
    lines = _common(
        state_dir=state_dir, admin_listen=admin_listen, llm_url=llm_url, log_level=log_level
    )
    return [*lines, "[webhooks]", f"listen = {_toml(webhooks_listen)}", ""]


def _one_channel(
    *,
    state_dir: Path,
    admin_listen: str,
    webhooks_listen: str,
    llm_url: str,
    log_level: str,
    channel: dict[str, str | float | bool],
) -> str:
    """A channeld TOML file: the daemon on the callback listener and one `[[channels]]` entry."""
    lines = _webhook_daemon(
        state_dir=state_dir,
        admin_listen=admin_listen,
        webhooks_listen=webhooks_listen,
        llm_url=llm_url,
        log_level=log_level,
    )
    lines += ["[[channels]]", *(f"{key} = {_toml(value)}" for key, value in channel.items()), ""]
    return "\n".join(lines)


def wukongim_config(
    *,
    state_dir: Path,
    admin_listen: str,
    webhooks_listen: str,
    api_base: str,
    llm_url: str,
    channel_id: str,
    card_updates_per_second: float,
    card_update_interval: float = 0.3,
    log_level: str = "WARNING",
) -> str:
    """A channeld TOML file: one WuKongIM channel (bot WUKONGIM_BOT) on the callback listener."""
    return _one_channel(
        state_dir=state_dir,
        admin_listen=admin_listen,
        webhooks_listen=webhooks_listen,
        llm_url=llm_url,
        log_level=log_level,
        channel={
            "id": channel_id,
            "type": "wukongim",
            "agent": "bench",
            "api_base": api_base,
            "token": WUKONGIM_TOKEN,
            "bot_uid": WUKONGIM_BOT,
            "stream": "event",
            "webhook_key": WEBHOOK_KEY,
            "card_update_interval": card_update_interval,
            "card_updates_per_second": card_updates_per_second,
        },
    )


def zim_config(
    *,
    state_dir: Path,
    admin_listen: str,
    webhooks_listen: str,
    api_base: str,
    llm_url: str,
    channel_id: str,
    log_level: str = "WARNING",
) -> str:
    """A channeld TOML file: one ZIM channel (robot ZIM_ROBOT, edit streaming, every other
    setting its default) on the callback listener."""
    return _one_channel(
        state_dir=state_dir,
        admin_listen=admin_listen,
        webhooks_listen=webhooks_listen,
        llm_url=llm_url,
        log_level=log_level,
        channel={
            "id": channel_id,
            "type": "zim",
            "agent": "bench",
            "app_id": int(ZIM_APP_ID),
            "server_secret": ZIM_SECRET,
            "api_base": api_base,
            "robot_id": ZIM_ROBOT,
            "stream": "edit",
        },
    )


def easemob_config(
    *,
    state_dir: Path,
    admin_listen: str,
    webhooks_listen: str,
    api_base: str,
    llm_url: str,
    channel_id: str,
    log_level: str = "WARNING",
) -> str:
    """A channeld TOML file: one Easemob channel (bot EASEMOB_BOT, rewrite streaming, every
    other setting its default) on the callback listener."""
    return _one_channel(
        state_dir=state_dir,
        admin_listen=admin_listen,
        webhooks_listen=webhooks_listen,
        llm_url=llm_url,
        log_level=log_level,
        channel={
            "id": channel_id,
            "type": "easemob",
            "agent": "bench",
            "api_base": api_base,
            "org_name": "bench",
            "app_name": "bench",
            "client_id": EASEMOB_CLIENT_ID,
            "client_secret": EASEMOB_SECRET,
            "callback_secret": EASEMOB_CALLBACK_SECRET,
            "bot_user": EASEMOB_BOT,
            "stream": "edit",
        },
    )
