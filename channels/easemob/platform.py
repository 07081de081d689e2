"""Easemob's registry entry: bot users of an Easemob app, reached by callback."""

from __future__ import annotations

from channels.easemob.config import EasemobChannelConfig
from channels.platform import Platform, provider_at

EASEMOB = Platform(
    name="easemob",
    title="Easemob",
    config=EasemobChannelConfig,
    provider=provider_at("channels.easemob.provider:EasemobProvider"),
    callbacks=True,
)
