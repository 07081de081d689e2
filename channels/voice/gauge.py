"""The calls-active gauge's feed: the ids of the calls under way, by channel and cloud."""

from __future__ import annotations

from collections.abc import Callable

from storage.repository import VoiceCallRecord


class CallObserver:
    """The calls-active gauge's feed; Metrics implements `voice_calls_active`.

    It counts call ids, not increments: a call counted twice, or ended by two enders, or ended
    before it was counted, moves the gauge once at most.
    """

    def __init__(self, report: Callable[[str, str, int], None]) -> None:
        self._report = report
        self._active: dict[tuple[str, str], set[str]] = {}

    def set(self, calls: list[VoiceCallRecord]) -> None:
        """Every active call, as found at start."""
        for key in self._active:
            self._report(*key, 0)
        self._active.clear()
        for call in calls:
            self.add(call)

    def add(self, call: VoiceCallRecord) -> None:
        """`call` is active."""
        self._change(call, add=True)

    def discard(self, call: VoiceCallRecord) -> None:
        """`call` is not active (any more)."""
        self._change(call, add=False)

    def _change(self, call: VoiceCallRecord, *, add: bool) -> None:
        key = (call.channel_id, call.provider)
        ids = self._active.setdefault(key, set())
        if add:
            ids.add(call.id)
        else:
            ids.discard(call.id)
        self._report(*key, len(ids))
