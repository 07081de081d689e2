"""Channel administration: validation, write-only secrets, provisioned vs API channels.

Every rule here is enforced by the server, whatever the client: secrets never leave in a
response, `***` or an omitted secret keeps the stored value, an empty secret is an error, and a
setting marked `x-sends-secrets` (where the secrets are sent) changes only with the secrets given
again in the same request, so an admin client can never redirect a stored secret to itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr, ValidationError

from channels import registry
from channels.config import ChannelConfigBase, sends_secrets
from channels.manager import ChannelManager
from common.errors import ConfigError
from daemon.secrets import MASK, SecretBox, SecretKeyError
from storage.repository import ChannelRecord, Store

SEALED = "$sealed"
IMMUTABLE = ("id", "type")


@dataclass
class ApiError(Exception):
    """An error answer: HTTP status, machine code, human message, offending fields."""

    status: int
    code: str
    message: str
    fields: list[dict[str, str]] = field(default_factory=list)


def secret_fields(config: ChannelConfigBase) -> set[str]:
    """Names of the settings typed as secrets."""
    return {
        name for name in type(config).model_fields if isinstance(getattr(config, name), SecretStr)
    }


def _validation_error(exc: ValidationError) -> ApiError:
    fields = []
    for error in exc.errors(include_input=False):
        loc = [str(p) for p in error["loc"]]
        if loc and loc[0] in registry.names():  # the discriminator tag pydantic puts in the path
            loc = loc[1:]
        fields.append({"path": ".".join(loc) or "body", "message": error["msg"]})
    summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
    return ApiError(422, "validation_error", f"invalid channel settings: {summary}", fields)


def parse_settings(data: Mapping[str, Any]) -> ChannelConfigBase:
    """Validate a full settings mapping; ApiError(422) naming each bad field."""
    try:
        return registry.channel_config().validate_python(dict(data))
    except ValidationError as exc:
        raise _validation_error(exc) from None


class CallbackEndpoint(Protocol):
    """The callback listener, as far as channels of webhook platforms need it."""

    def hook_url(self, channel_id: str) -> str:
        """The URL to give the platform for the channel."""
        ...

    async def start(self) -> None:
        """Serve, if not yet serving."""
        ...

    def refuses(self, config: ChannelConfigBase) -> str | None:
        """Why the channel's callbacks may not be served (they would carry no proof)."""
        ...


def takes_callbacks(channel_type: str) -> bool:
    """Whether channels of `channel_type` receive their messages as HTTP callbacks."""
    return any(p.callbacks for p in registry.platforms() if p.name == channel_type)


class ChannelService:
    """What the admin API does to channels; the manager reconciles after each change."""

    def __init__(
        self,
        store: Store,
        manager: ChannelManager,
        box: SecretBox,
        agents: set[str],
        *,
        on_deleted: Callable[[str], None] | None = None,
        callbacks: CallbackEndpoint | None = None,
    ) -> None:
        self._on_deleted = on_deleted
        self._callbacks = callbacks
        self._store = store
        self._manager = manager
        self._box = box
        self._agents = agents

    # -- storage form -----------------------------------------------------------------------

    def _seal(self, config: ChannelConfigBase) -> dict[str, Any]:
        settings: dict[str, Any] = config.model_dump(mode="json")
        for name in secret_fields(config):
            value: SecretStr = getattr(config, name)
            settings[name] = {SEALED: self._box.seal(value.get_secret_value())}
        return {"settings": settings}

    def decode(self, record: ChannelRecord) -> ChannelConfigBase:
        """Settings of an API channel with its secrets decrypted (for the provider only)."""
        return decode_record(self._box, record)

    # -- views ------------------------------------------------------------------------------

    def view(self, record: ChannelRecord) -> dict[str, Any]:
        """The API's channel object: settings with every secret as `***`, and live status."""
        settings = dict(record.spec.get("settings", {}))
        for name, value in settings.items():
            if isinstance(value, dict) and SEALED in value:
                settings[name] = MASK
        live = self._manager.settings(record) if record.source == "config" else None
        if live is not None:
            settings = live.model_dump(mode="json")
            for name in secret_fields(live):
                settings[name] = MASK
        for name in IMMUTABLE:
            settings.pop(name, None)
        status = self._manager.status(record.id)
        now = time.time()
        connected = status.connected_at if status.state.value == "connected" else None
        view: dict[str, Any] = {
            "id": record.id,
            "type": record.type,
            "agent": record.agent,
            "enabled": record.enabled,
            "source": record.source,
            "version": record.version,
            "settings": settings,
            "status": {
                "state": status.state.value,
                "connected_at": _iso(connected),
                "uptime_seconds": round(now - connected, 3) if connected else None,
                "last_event_at": _iso(status.last_event_at),
                "last_error": status.last_error,
                "reconnects": status.reconnects,
                "messages_received": status.messages_received,
                "next_attempt_at": _iso(status.next_attempt_at),
            },
        }
        if self._callbacks is not None and takes_callbacks(record.type):
            # where the platform must send its callbacks (a key the URL needs is not shown)
            view["webhook_url"] = self._callbacks.hook_url(record.id)
        return view

    # -- reads ------------------------------------------------------------------------------

    async def list(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in sorted(await self._store.list_channels(), key=lambda r: r.id)]

    async def get_record(self, channel_id: str) -> ChannelRecord:
        record = await self._store.get_channel(channel_id)
        if record is None:
            raise ApiError(404, "not_found", f"no channel {channel_id!r}")
        return record

    async def get(self, channel_id: str) -> dict[str, Any]:
        return self.view(await self.get_record(channel_id))

    # -- writes -----------------------------------------------------------------------------

    def _check_agent(self, config: ChannelConfigBase) -> None:
        if config.agent not in self._agents:
            known = ", ".join(sorted(self._agents))
            raise ApiError(
                422,
                "validation_error",
                f"agent: unknown agent {config.agent!r} (defined: {known})",
                [{"path": "agent", "message": f"unknown agent {config.agent!r}"}],
            )

    def _check_callbacks(self, config: ChannelConfigBase) -> None:
        reason = self._callbacks.refuses(config) if self._callbacks is not None else None
        if reason is not None:
            raise ApiError(422, "validation_error", reason, [{"path": "", "message": reason}])

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        for name, value in body.items():
            if value == MASK:
                raise ApiError(
                    422,
                    "validation_error",
                    f"{name}: '***' is not a value",
                    [{"path": name, "message": "'***' only means 'keep' on edit"}],
                )
        config = parse_settings(body)
        self._check_agent(config)
        self._check_callbacks(config)
        if await self._store.get_channel(config.id) is not None:
            raise ApiError(409, "conflict", f"channel {config.id!r} already exists")
        await self._store.upsert_channel(
            config.id,
            type=config.type,
            agent=config.agent,
            enabled=config.enabled,
            source="api",
            spec=self._seal(config),
        )
        if self._callbacks is not None and takes_callbacks(config.type):
            await self._callbacks.start()  # the first webhook channel: the listener opens now
        await self._manager.reconcile()
        return await self.get(config.id)

    def _managed_by_file(self, record: ChannelRecord) -> None:
        if record.source == "config":
            raise ApiError(
                409,
                "managed_by_config",
                f"channel {record.id!r} is managed by the config file; edit the file and reload "
                "(enable, disable and restart work through the API)",
            )

    async def update(self, channel_id: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        record = await self.get_record(channel_id)
        self._managed_by_file(record)
        merged, unreadable = _open_settings(self._box, record)
        secrets = sealed_names(record)
        current = _parse_or_none({**merged, **dict.fromkeys(unreadable, MASK)})
        for name, value in patch.items():
            if name in IMMUTABLE and value != merged.get(name):
                raise ApiError(
                    422,
                    "validation_error",
                    f"{name}: cannot be changed",
                    [{"path": name, "message": "cannot be changed"}],
                )
            if name in secrets:
                if value is None or value == MASK:
                    continue  # write-only: keep what is stored
                if value == "":
                    raise ApiError(
                        422,
                        "validation_error",
                        f"{name}: must not be empty",
                        [{"path": name, "message": "must not be empty; omit it to keep"}],
                    )
            merged[name] = value
        given = {n for n in secrets if patch.get(n) not in (None, MASK)}
        if missing := unreadable - given:
            raise _secret_required(
                missing, "the stored secret does not decrypt with the current key"
            )
        config = parse_settings(merged)
        self._check_agent(config)
        self._check_callbacks(config)
        moved = [
            name
            for name in sends_secrets(type(config))
            if current is None or getattr(current, name) != getattr(config, name)
        ]
        if moved and (missing := secrets - given):
            raise _secret_required(
                missing,
                f"{', '.join(moved)} decides where the channel's secrets are sent; the stored "
                "secrets never go to a new address unless given again in the same request",
            )
        await self._store.upsert_channel(
            channel_id,
            type=config.type,
            agent=config.agent,
            enabled=config.enabled,
            source="api",
            spec=self._seal(config),
        )
        await self._manager.reconcile()
        return await self.get(channel_id)

    async def delete(self, channel_id: str) -> None:
        record = await self.get_record(channel_id)
        self._managed_by_file(record)
        await self._store.delete_channel(channel_id)
        await self._manager.reconcile()
        self._manager.forget(channel_id)
        if self._on_deleted is not None:
            self._on_deleted(channel_id)

    async def set_enabled(self, channel_id: str, enabled: bool) -> dict[str, Any]:
        await self.get_record(channel_id)
        await self._manager.set_enabled(channel_id, enabled)
        return await self.get(channel_id)

    async def restart(self, channel_id: str) -> dict[str, Any]:
        await self.get_record(channel_id)
        await self._manager.restart(channel_id)
        return await self.get(channel_id)


def sealed_names(record: ChannelRecord) -> set[str]:
    """Names of the settings stored sealed (the channel's secrets)."""
    settings = record.spec.get("settings", {})
    return {n for n, v in settings.items() if isinstance(v, dict) and SEALED in v}


def sealed_channels(records: Iterable[ChannelRecord]) -> list[str]:
    """Ids of the channels whose stored settings hold sealed secrets."""
    return sorted(r.id for r in records if sealed_names(r))


def _open_settings(box: SecretBox, record: ChannelRecord) -> tuple[dict[str, Any], set[str]]:
    """Stored settings with secrets decrypted, and the names of those the key cannot open."""
    settings = dict(record.spec.get("settings", {}))
    unreadable = set()
    for name in sealed_names(record):
        try:
            settings[name] = box.open(str(settings[name][SEALED]))
        except SecretKeyError:
            del settings[name]
            unreadable.add(name)
    return settings, unreadable


def _parse_or_none(settings: Mapping[str, Any]) -> ChannelConfigBase | None:
    try:
        return parse_settings(settings)
    except ApiError:
        return None  # stored before a validator tightened: every setting counts as changed


def _secret_required(names: set[str], why: str) -> ApiError:
    listed = ", ".join(sorted(names))
    return ApiError(
        409,
        "secret_required",
        f"{listed}: give it again in this request: {why}",
        [{"path": name, "message": f"required: {why}"} for name in sorted(names)],
    )


def decode_record(box: SecretBox, record: ChannelRecord) -> ChannelConfigBase:
    """Settings stored for an API channel, secrets decrypted; ConfigError when that fails."""
    settings, unreadable = _open_settings(box, record)
    if unreadable:
        raise ConfigError(
            f"{', '.join(sorted(unreadable))}: the stored secret does not decrypt with the current "
            "key; restore the key or re-enter the secret"
        )
    try:
        return parse_settings(settings)
    except ApiError as exc:
        raise ConfigError(f"stored settings are not valid: {exc.message}") from None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
