"""Channel administration: validation, write-only secrets, provisioned vs API channels.

Every rule here is enforced by the server, whatever the client, and at any depth of the
settings (`voice.zego.server_secret` as well as `client_secret`): secrets never leave in a
response, `***` or an omitted secret keeps the stored value, an empty secret is an error, and a
setting marked `x-sends-secrets` (where a section's secrets are sent) changes only with that
section's secrets given again in the same request, so an admin client can never redirect a stored
secret to itself. A PATCH merges into a nested section (`voice`, `voice.zego`) key by key, and
`null` removes an optional section with its secrets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from channels import registry
from channels.config import ChannelConfigBase
from channels.manager import ChannelManager
from channels.voice.config import VoiceConfig
from common.errors import ConfigError
from daemon.config import error_message
from daemon.secrets import MASK, SecretBox, SecretKeyError
from daemon.settings_paths import (
    MISSING,
    Path,
    dotted,
    find_key,
    find_value,
    get,
    leaves,
    marked,
    present_secrets,
    removed,
    replaced,
    secret_paths,
    sections,
)
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


def _invalid(path: Path, message: str, detail: str | None = None) -> ApiError:
    name = dotted(path)
    return ApiError(
        422,
        "validation_error",
        f"{name}: {message}",
        [{"path": name, "message": detail or message}],
    )


def _validation_error(exc: ValidationError) -> ApiError:
    fields = []
    for error in exc.errors(include_input=False):
        loc = [str(p) for p in error["loc"]]
        if loc and loc[0] in registry.names():  # the discriminator tag pydantic puts in the path
            loc = loc[1:]
        fields.append({"path": ".".join(loc) or "body", "message": error_message(error)})
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


def _needs_listener(config: ChannelConfigBase) -> bool:
    # the voice endpoint and the clouds' call events are served by the callback listener too
    return takes_callbacks(config.type) or config.voice is not None


def voice_urls(channel_id: str, voice: VoiceConfig) -> dict[str, str]:
    """The URLs an operator enters in the clouds' consoles for a channel's voice section."""
    urls = {"llm_endpoint": voice.endpoint_url(channel_id)}
    if voice.aliyun is not None:  # ZEGO gets its LLM URL per call; Alibaba's console wants a base
        urls["aliyun_llm_base"] = voice.endpoint_base(channel_id)
    urls["callback"] = voice.callback_url(channel_id)
    return urls


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
        for path, value in present_secrets(config).items():
            settings = replaced(settings, path, {SEALED: self._box.seal(value.get_secret_value())})
        return {"settings": settings}

    def decode(self, record: ChannelRecord) -> ChannelConfigBase:
        """Settings of an API channel with its secrets decrypted (for the provider only)."""
        return decode_record(self._box, record)

    # -- views ------------------------------------------------------------------------------

    def view(self, record: ChannelRecord) -> dict[str, Any]:
        """The API's channel object: settings with every secret as `***`, and live status."""
        live = self._manager.settings(record) if record.source == "config" else None
        if live is not None:
            settings = _masked(live.model_dump(mode="json"), set(present_secrets(live)))
        else:
            stored = record.spec.get("settings", {})
            model = _model_or_none(record.type)
            typed = secret_paths(model) if model is not None else frozenset()
            # sealed values, and anything at a secret's place that is not (never shown either)
            hidden = sealed_paths(record) | {
                p for p in typed if get(stored, p) not in (MISSING, None)
            }
            settings = _masked(stored, hidden)
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
        voice = live.voice if live is not None else _voice_or_none(settings.get("voice"))
        if voice is not None:
            view["voice_urls"] = voice_urls(record.id, voice)
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
        _refuse_reserved(body)
        if (path := find_value(body, MASK)) is not None:
            raise _invalid(path, "'***' is not a value", "'***' only means 'keep' on edit")
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
        if self._callbacks is not None and _needs_listener(config):
            await self._callbacks.start()  # the first webhook or voice channel: it opens now
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
        _refuse_reserved(patch)
        model = _model_or_none(record.type)
        if model is None:
            raise ApiError(
                422, "validation_error", f"channel type {record.type!r} is not supported"
            )
        stored, unreadable = _open_settings(self._box, record)
        sealed = sealed_paths(record)
        # stand-ins for the secrets the key cannot open, so the rest still parses
        current = _parse_or_none(_masked(stored, unreadable))
        merged, given = merge_patch(stored, patch, model, sealed)
        # a secret of a section the patch removes is needed no more
        unopened = {p for p in unreadable - given if isinstance(get(merged, p[:-1]), Mapping)}
        if unopened:
            raise _secret_required(
                unopened, "the stored secret does not decrypt with the current key"
            )
        config = parse_settings(merged)
        self._check_agent(config)
        self._check_callbacks(config)
        _refuse_redirect(model, current, config, sealed, given)
        await self._store.upsert_channel(
            channel_id,
            type=config.type,
            agent=config.agent,
            enabled=config.enabled,
            source="api",
            spec=self._seal(config),
        )
        if self._callbacks is not None and _needs_listener(config):
            await self._callbacks.start()  # a voice section added to a channel
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


def sealed_paths(record: ChannelRecord) -> set[Path]:
    """Paths of the settings stored sealed (the channel's secrets, at any depth)."""
    settings = record.spec.get("settings", {})
    return leaves(settings, lambda value: SEALED in value)


def sealed_channels(records: Iterable[ChannelRecord]) -> list[str]:
    """Ids of the channels whose stored settings hold sealed secrets."""
    return sorted(r.id for r in records if sealed_paths(r))


def _model_or_none(channel_type: str) -> type[ChannelConfigBase] | None:
    return next((p.config for p in registry.platforms() if p.name == channel_type), None)


def _masked(settings: Mapping[str, Any], paths: Iterable[Path]) -> dict[str, Any]:
    masked = dict(settings)
    for path in paths:
        masked = replaced(masked, path, MASK)
    return masked


def _voice_or_none(settings: Any) -> VoiceConfig | None:
    if not isinstance(settings, Mapping):
        return None
    zego = settings.get("zego")
    if isinstance(zego, Mapping):
        # the provider objects arrive masked, which no JSON object parses; URLs need neither
        settings = {**settings, "zego": {k: v for k, v in zego.items() if k not in ("tts", "asr")}}
    try:
        return VoiceConfig.model_validate(settings)  # its secrets arrive masked, which parses
    except ValidationError:
        return None  # stored before a validator tightened: no URLs rather than wrong ones


def _refuse_reserved(body: Mapping[str, Any]) -> None:
    # the storage form marks sealed secrets with this key: a value holding it is never stored
    if (path := find_key(body, SEALED)) is not None:
        raise _invalid(path, f"{SEALED!r} is a reserved key")


def merge_patch(
    stored: Mapping[str, Any],
    patch: Mapping[str, Any],
    model: type[BaseModel],
    sealed: set[Path],
) -> tuple[dict[str, Any], set[Path]]:
    """The stored settings with the patch applied, and the secrets it gives (by path).

    A section's object is merged key by key, recursively; any other value replaces the stored
    one (`null` included: an optional section goes, with its secrets). A secret omitted, `null`
    or `***` keeps the stored value; an empty one is refused.
    """
    secrets = secret_paths(model)
    nested = sections(model)
    given: set[Path] = set()

    def merge(base: Mapping[str, Any], changes: Mapping[str, Any], at: Path) -> dict[str, Any]:
        out = dict(base)
        for name, value in changes.items():
            path = (*at, name)
            if not at and name in IMMUTABLE and value != base.get(name):
                raise _invalid(path, "cannot be changed")
            if path in secrets:
                if value is None or value == MASK:
                    if path in sealed:
                        continue  # write-only: keep what is stored
                    if value == MASK:
                        raise _invalid(path, "'***' keeps a stored secret, and none is stored")
                elif value == "":
                    raise _invalid(path, "must not be empty", "must not be empty; omit it to keep")
                else:
                    given.add(path)
            elif path in nested and isinstance(value, Mapping):
                inner = base.get(name)
                out[name] = merge(inner if isinstance(inner, Mapping) else {}, value, path)
                continue
            out[name] = value
        return out

    return merge(stored, patch, ()), given


def _refuse_redirect(
    model: type[BaseModel],
    current: ChannelConfigBase | None,
    config: ChannelConfigBase,
    sealed: set[Path],
    given: set[Path],
) -> None:
    """A setting marked x-sends-secrets changes only with its section's stored secrets given."""
    moved: list[str] = []
    missing: set[Path] = set()
    for at, names in marked(model).items():
        after = get(config, at)
        if after is MISSING or after is None:
            continue  # the section is gone: its secrets go nowhere
        before = MISSING if current is None else get(current, at)
        # stored before a validator tightened (no current): every setting counts as changed
        changed = [
            name
            for name in names
            if before is MISSING or before is None or getattr(before, name) != getattr(after, name)
        ]
        # the section's own secrets; a section holding none of its own (`voice`, whose
        # public_base_url carries each call's secret) needs those of every section inside it
        own = {p for p in sealed if p[:-1] == at}
        needed = (own or {p for p in sealed if at and p[: len(at)] == at}) - given
        if changed and needed:
            moved.extend(dotted((*at, name)) for name in changed)
            missing |= needed
    if missing:
        raise _secret_required(
            missing,
            f"{', '.join(moved)} decides where the channel's secrets are sent; the stored "
            "secrets never go to a new address unless given again in the same request",
        )


def _open_settings(box: SecretBox, record: ChannelRecord) -> tuple[dict[str, Any], set[Path]]:
    """Stored settings with secrets decrypted, and the paths of those the key cannot open."""
    settings = dict(record.spec.get("settings", {}))
    unreadable = set()
    for path in sealed_paths(record):
        try:
            settings = replaced(settings, path, box.open(str(get(settings, path)[SEALED])))
        except SecretKeyError:
            settings = removed(settings, path)
            unreadable.add(path)
    return settings, unreadable


def _parse_or_none(settings: Mapping[str, Any]) -> ChannelConfigBase | None:
    try:
        return parse_settings(settings)
    except ApiError:
        return None  # stored before a validator tightened: every setting counts as changed


def _secret_required(paths: set[Path], why: str) -> ApiError:
    names = sorted(dotted(p) for p in paths)
    return ApiError(
        409,
        "secret_required",
        f"{', '.join(names)}: give it again in this request: {why}",
        [{"path": name, "message": f"required: {why}"} for name in names],
    )


def decode_record(box: SecretBox, record: ChannelRecord) -> ChannelConfigBase:
    """Settings stored for an API channel, secrets decrypted; ConfigError when that fails."""
    settings, unreadable = _open_settings(box, record)
    if unreadable:
        raise ConfigError(
            f"{', '.join(sorted(dotted(p) for p in unreadable))}: the stored secret does not "
            "decrypt with the current key; restore the key or re-enter the secret"
        )
    try:
        return parse_settings(settings)
    except ApiError as exc:
        raise ConfigError(f"stored settings are not valid: {exc.message}") from None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
