"""The configuration contract: one TOML file, `${VAR}` expansion, `CHANNELD_*` overrides, pydantic.

Precedence: embedded defaults < the TOML file < `CHANNELD_<SECTION>__<KEY>` environment variables.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from agents.config import AgentConfig, EchoAgentConfig, OpenAIAgentConfig
from agents.faq import DEFAULT_THRESHOLD, FaqEntry
from agents.registry import fallback_order
from agents.routes import Route
from channels import registry
from channels.config import ChannelConfigBase
from common.endpoint import http_base_url, is_loopback
from common.errors import ConfigError as ChannelConfigError
from daemon.hosts import parse_host

ENV_PREFIX = "CHANNELD_"
EXIT_CONFIG_ERROR = 11


def _registered_channel(value: Any) -> ChannelConfigBase:
    return registry.channel_config().validate_python(value)


# One `[[channels]]` entry: the registry picks the model by `type`, when validating rather than
# when this module loads, so a platform registered later is known too. SerializeAsAny: a dump
# holds the platform's fields, not only the base's.
ChannelConfig = Annotated[SerializeAsAny[ChannelConfigBase], PlainValidator(_registered_channel)]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigurationError(Exception):
    """The configuration is invalid; the message names the offending key."""


def default_state_dir() -> Path:
    """systemd's StateDirectory when set, else ./.state beside the working directory."""
    return Path(os.environ.get("STATE_DIRECTORY", ".state")).resolve()


class DaemonSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str = ""  # empty: SQLite file under state_dir
    log_level: str = "INFO"
    graceful_timeout: float = Field(default=20.0, ge=0, le=600)
    recovery_window_minutes: float = Field(default=10.0, ge=0, le=1440)  # answer after a crash
    secret_key_file: Path | None = None  # default: $CREDENTIALS_DIRECTORY or state_dir/secret.key
    # Finished journal rows hold whole inbound payloads, reply URLs (session webhooks) among
    # them: 30 days is long enough to investigate a complaint and far past any platform's
    # redelivery window (a pruned message id no longer dedupes), short enough that a leaked
    # database holds a month, not years. 0 keeps them forever.
    retention_days: int = 30
    # Conversation history is the agents' memory: kept until the operator says otherwise.
    conversation_retention_days: int = 0
    # Answers written at once, across every channel; the rest wait their turn, in order. 64
    # streams already update cards faster than the strictest platform's 50 calls/s per app, and
    # bound what one burst costs in sockets, memory and LLM spend.
    max_concurrent_answers: int = 64

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("retention_days", "conversation_retention_days", mode="before")
    @classmethod
    def _whole_days(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36500:
            raise ValueError(
                f"must be a whole number of days from 0 (keep forever) to 36500, got {value!r}"
            )
        return value

    @field_validator("max_concurrent_answers", mode="before")
    @classmethod
    def _positive_count(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
            raise ValueError(f"must be a whole number from 1 to 10000, got {value!r}")
        return value

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.state_dir / 'channeld.db'}"


def host_port(value: str) -> str:
    """`value` if it is HOST:PORT; ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("listen must be HOST:PORT")
    return value


class AdminSection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:8787"
    # unset: the daemon generates one in <state_dir>/admin.token (daemon/admin_token.py)
    token: SecretStr | None = None
    # Host header values answered besides loopback names and the listen address (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return host_port(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = []
        for entry in value:
            parsed = parse_host(entry)
            if parsed is None:
                raise ValueError(
                    f"{entry!r} is not a host name or address, optionally with :PORT "
                    "(IPv6 in brackets; no wildcards)"
                )
            hosts.append(str(parsed))
        return tuple(hosts)

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> AdminSection:
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(f"token is required when listen ({self.listen}) is not loopback")
        if self.token is not None:
            token = self.token.get_secret_value()
            if len(token) < 8:
                raise ValueError("token must be at least 8 characters")
            # it travels in an HTTP header, where browsers allow nothing else
            if not (token.isascii() and token.isprintable()) or " " in token:
                raise ValueError("token must be printable ASCII without spaces")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def loopback_listen(value: str) -> str:
    """`value` if it is HOST:PORT on a loopback host; ValueError saying why otherwise."""
    host, sep, port = value.rpartition(":")
    # a bare port ("18788") or an empty host (":18788") binds every interface
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a loopback host, got {value!r}")
    if not is_loopback(host.strip("[]")):
        raise ValueError(
            f"must be a loopback address (127.0.0.1, ::1, localhost), got {value!r}: "
            "an emulator has no authentication; whoever reaches it talks to the bot and its LLM"
        )
    return value


class EmulatorSection(BaseModel):
    """The embedded emulator (the registry's demo platform) used when no tenant is configured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    listen: str = "127.0.0.1:8788"

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        return loopback_listen(value)


def unproven_error(channel_id: str, reason: str, webhooks: WebhooksSection) -> str:
    """Why a channel whose callbacks carry no proof may not sit behind an exposed listener."""
    return (
        f"channel {channel_id!r}: {reason}: set it, since [webhooks] listen ({webhooks.listen}) "
        "is not loopback and anyone who reaches it could post messages as any user"
    )


class WebhooksSection(BaseModel):
    """The callback listener: webhook platforms' servers POST to `/hooks/{channel_id}` here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:8789"
    # how the platforms reach the listener (a reverse proxy's URL): shown to operators as the
    # URL to paste into a platform's console; empty: the listen address
    public_url: str = ""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return host_port(value)

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return http_base_url(value) if value else value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def hook_url(self, channel_id: str, port: int | None = None) -> str:
        """The URL a platform must call for `channel_id` (`port`: the one actually bound)."""
        if self.public_url:
            return f"{self.public_url}/hooks/{channel_id}"
        host = self.listen.rpartition(":")[0]
        return f"http://{host}:{port or self.port}/hooks/{channel_id}"


# what each mapper cannot do without, and what the key is for (check-config says both)
_MAPPER_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "file": (("users_file", "the TOML file listing [[users]] with their identities"),),
    "http": (("http_url", "the URL the directory is POSTed each new sender to"),),
    "ldap": (
        ("ldap_url", "the server, ldaps://host or ldap://host (StartTLS)"),
        ("ldap_base_dn", "where people are searched, e.g. ou=people,dc=example,dc=com"),
    ),
}


class UsersSection(BaseModel):
    """Who a sender is: each platform identity its own user ("auto") or a directory's person."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mapper: Literal["auto", "file", "http", "ldap"] = "auto"
    on_miss: Literal["create", "refuse"] = "create"
    default_email_domain: str = "im-platform.invalid"
    # ask DingTalk and Feishu for a new sender's e-mail, mobile and employee number (the app needs
    # the permission); off by default: it is one platform call per new sender, and the directory
    # otherwise gets what the platforms' messages carry
    enrich: bool = False
    cache_seconds: float = Field(default=3600.0, ge=0, le=30 * 86400)
    refused_text: str = Field(default="You are not allowed to use this assistant.", min_length=1)
    blocked_text: str = Field(default="You have been blocked from this assistant.", min_length=1)
    users_file: Path | None = None
    http_url: str = ""
    http_timeout: float = Field(default=5.0, gt=0, le=60)
    http_retries: int = Field(default=1, ge=0, le=5)
    ldap_url: str = ""
    ldap_bind_dn: str = ""
    ldap_bind_password: SecretStr | None = None
    ldap_base_dn: str = ""
    ldap_filter: str = "(|(mail={email})(employeeNumber={employee_no}))"
    ldap_groups_attribute: str = "memberOf"
    ldap_timeout: float = Field(default=5.0, gt=0, le=60)
    ldap_ca_file: Path | None = None  # a private CA's PEM bundle; default: the system's

    @field_validator("http_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("must be https unless the directory is on this machine (loopback)")
        return value

    @field_validator("ldap_url")
    @classmethod
    def _ldap_url(cls, value: str) -> str:
        if value and (
            urlsplit(value).scheme not in {"ldap", "ldaps"} or not urlsplit(value).hostname
        ):
            raise ValueError(f"must be ldaps://host[:port] or ldap://host[:port], got {value!r}")
        return value

    @model_validator(mode="after")
    def _mapper_keys(self) -> UsersSection:
        missing = [
            f"{key} ({why})"
            for key, why in _MAPPER_NEEDS.get(self.mapper, ())
            if not getattr(self, key)
        ]
        if missing:
            raise ValueError(f'mapper = "{self.mapper}" needs ' + " and ".join(missing))
        return self


class Settings(BaseModel):
    """The whole validated configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    daemon: DaemonSection = DaemonSection()
    admin: AdminSection = AdminSection()
    emulator: EmulatorSection = EmulatorSection()
    webhooks: WebhooksSection = WebhooksSection()
    users: UsersSection = UsersSection()
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    channels: list[ChannelConfig] = Field(default_factory=list)
    faq: list[FaqEntry] = Field(default_factory=list)  # answered before any model is asked
    faq_threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0, le=100)  # fuzzy match score
    routes: list[Route] = Field(default_factory=list)  # first match picks the agent, after the FAQ

    @field_validator("channels")
    @classmethod
    def _unique_ids(cls, value: list[ChannelConfig]) -> list[ChannelConfig]:
        seen: set[str] = set()
        for channel in value:
            if channel.id in seen:
                raise ValueError(f"duplicate channel id {channel.id!r}")
            seen.add(channel.id)
        return value

    def check_references(self) -> None:
        """Cross-field checks pydantic cannot express per field."""
        try:
            fallback_order(self.agents)  # unknown fallbacks and cycles, without building clients
        except ChannelConfigError as exc:
            raise ConfigurationError(str(exc)) from None
        for index, channel in enumerate(self.channels):
            if channel.agent not in self.agents:
                raise ConfigurationError(
                    f"channels.{index}.agent: unknown agent {channel.agent!r} "
                    f"(defined: {', '.join(sorted(self.agents)) or 'none'})"
                )
        self._check_routes()
        for name, agent in self.agents.items():
            if agent.fallback is not None and agent.fallback not in self.agents:
                raise ConfigurationError(
                    f"agents.{name}.fallback: unknown agent {agent.fallback!r}"
                )
        if not is_loopback(self.webhooks.host):
            for channel in self.channels:
                if (reason := channel.unproven_callbacks()) is not None:
                    raise ConfigurationError(unproven_error(channel.id, reason, self.webhooks))

    def _check_routes(self) -> None:
        channel_ids = {channel.id for channel in self.channels}
        for index, route in enumerate(self.routes):
            if route.agent not in self.agents:
                raise ConfigurationError(
                    f"routes.{index}.agent: unknown agent {route.agent!r} "
                    f"(defined: {', '.join(sorted(self.agents)) or 'none'})"
                )
            # channels added through the admin API are not in the file: a route naming one
            # is refused here, as a typo would be
            for channel_id in route.channels or ():
                if channel_id not in channel_ids:
                    raise ConfigurationError(
                        f"routes.{index}.channels: unknown channel {channel_id!r} "
                        f"(in this file: {', '.join(sorted(channel_ids)) or 'none'})"
                    )
            for platform in route.platforms or ():
                if platform not in registry.names():
                    raise ConfigurationError(
                        f"routes.{index}.platforms: unknown platform {platform!r} "
                        f"(known: {', '.join(sorted(registry.names()))})"
                    )


def expand_variables(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed TOML document."""
    if isinstance(value, dict):
        return {
            k: expand_variables(v, environ, f"{path}.{k}" if path else k) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_variables(v, environ, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigurationError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """`CHANNELD_ADMIN__TOKEN=x` sets admin.token; `CHANNELD_CHANNELS__0__ENABLED=false` an item.

    Values are parsed as JSON when they parse (numbers, booleans), else taken as strings.
    """
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigurationError(
                        f"{key}: no list item {part} at {'.'.join(parts[:depth])}"
                    )
                if last:
                    node[int(part)] = parsed
                else:
                    node = node[int(part)]
            elif last:
                node[part] = parsed
            else:
                node = node.setdefault(part, {})
    return data


def _error_location(error: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """Dotted key path of a pydantic error, with the channel's id where that helps."""
    loc = [str(p) for p in error["loc"]]
    # discriminated unions add the tag (the platform's name) to the path; the operator never
    # wrote it
    if len(loc) > 2 and loc[0] == "channels" and loc[2] in registry.names():
        loc.pop(2)
    if len(loc) > 1 and loc[0] == "agents" and len(loc) > 2 and loc[2] in {"openai", "echo"}:
        loc.pop(2)
    path = ".".join(loc)
    if loc[:1] == ["channels"] and len(loc) > 1 and loc[1].isdigit():
        channels = data.get("channels") or []
        index = int(loc[1])
        if index < len(channels) and isinstance(channels[index], dict) and "id" in channels[index]:
            path += f" (channel {channels[index]['id']!r})"
    return path


def error_message(error: Mapping[str, Any]) -> str:
    """A pydantic error's message, in the words an operator expects where pydantic's are odd."""
    context = error.get("ctx") or {}
    if error["type"] == "too_short" and context.get("min_length") == 1:
        # a secret's minimum length reads "Value should have at least 1 item after validation"
        return "must not be empty"
    return str(error["msg"])


def validate(data: dict[str, Any]) -> Settings:
    """Validate a config mapping; ConfigurationError lists each offending key."""
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        lines = [f"{_error_location(e, data)}: {error_message(e)}" for e in errors]
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    settings.check_references()
    return settings


def embedded_defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """What `channeld run` uses with no file: echo or env-configured LLM, the demo emulator."""
    agent: dict[str, Any]
    if environ.get("LLM_API_KEY") or environ.get("LLM_BASE_URL"):
        agent = {
            "type": "openai",
            "base_url": environ.get("LLM_BASE_URL", "https://api.openai.com/v1"),
            "api_key": environ.get("LLM_API_KEY", ""),
            "model": environ.get("LLM_MODEL", "gpt-4o-mini"),
        }
    else:
        agent = {"type": "echo"}
    return {"agents": {"default": agent}, "channels": [], "emulator": {"enabled": True}}


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, expand, override and validate. `path=None` uses the embedded defaults."""
    env = os.environ if environ is None else environ
    if path is None:
        data: dict[str, Any] = embedded_defaults(env)
    else:
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
        data = expand_variables(data, env)
        data.setdefault("agents", {})
        if not data["agents"]:
            data["agents"] = embedded_defaults(env)["agents"]
    data = apply_env_overrides(data, env)
    return validate(data)


__all__ = [
    "EXIT_CONFIG_ERROR",
    "AgentConfig",
    "ChannelConfig",
    "ConfigurationError",
    "EchoAgentConfig",
    "OpenAIAgentConfig",
    "Settings",
    "error_message",
    "load",
]
