"""Channel desired state, which the channel manager reconciles running providers from."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from storage.base import CONFLICT_ATTEMPTS, StoreBase, completes
from storage.models import Channel
from storage.records import ChannelRecord


def _normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    # Compare what the database will give back (tuples become lists, keys become strings), so
    # an unchanged spec never looks changed; also fails early on values JSON cannot carry.
    normalised = json.loads(json.dumps(spec))
    if not isinstance(normalised, dict):
        raise TypeError("channel spec must be a JSON object")
    return normalised


class ChannelRepository(StoreBase):
    """Channel operations of the Store."""

    async def list_channels(self) -> list[ChannelRecord]:
        """Every channel, by id."""
        async with self._read() as session:
            rows = await session.exec(select(Channel).order_by(col(Channel.id)))
            return [ChannelRecord.from_row(row) for row in rows]

    async def get_channel(self, channel_id: str) -> ChannelRecord | None:
        """The channel with this id, if any."""
        async with self._read() as session:
            row = await session.get(Channel, channel_id)
            return None if row is None else ChannelRecord.from_row(row)

    @completes
    async def upsert_channel(
        self,
        channel_id: str,
        *,
        type: str,
        agent: str,
        enabled: bool,
        source: str,
        spec: dict[str, Any],
    ) -> ChannelRecord:
        """Creates or replaces a channel; the version moves only when type/agent/enabled/spec do."""
        spec = _normalise_spec(spec)
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            async with self._write() as session:
                row = await session.get(Channel, channel_id, with_for_update=True)
                now = self._now()
                if row is None:
                    row = Channel(
                        id=channel_id,
                        type=type,
                        agent=agent,
                        enabled=enabled,
                        source=source,
                        spec=spec,
                        version=1,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(row)
                else:
                    changed = (row.type, row.agent, row.enabled, row.spec) != (
                        type,
                        agent,
                        enabled,
                        spec,
                    )
                    if not changed and row.source == source:
                        return ChannelRecord.from_row(row)
                    if changed:
                        row.version += 1
                    row.type, row.agent, row.enabled, row.source = type, agent, enabled, source
                    row.spec = spec
                    row.updated_at = now
                try:
                    await session.commit()
                except IntegrityError:
                    # A concurrent upsert inserted the same id first; update it next round.
                    if attempt == CONFLICT_ATTEMPTS:
                        raise
                    continue
                return ChannelRecord.from_row(row)
        raise AssertionError("unreachable")

    @completes
    async def set_channel_enabled(self, channel_id: str, enabled: bool) -> ChannelRecord | None:
        """Enables or disables a channel (a change bumps the version); None if it is unknown."""
        async with self._write() as session:
            row = await session.get(Channel, channel_id, with_for_update=True)
            if row is None:
                return None
            if row.enabled != enabled:
                row.enabled = enabled
                row.version += 1
                row.updated_at = self._now()
                await session.commit()
            return ChannelRecord.from_row(row)

    @completes
    async def delete_channel(self, channel_id: str) -> bool:
        """Deletes a channel's desired state; False if it did not exist."""
        async with self._write() as session:
            result = await session.exec(delete(Channel).where(col(Channel.id) == channel_id))
            await session.commit()
            return result.rowcount > 0
