"""The answers streaming to each call: one at a time per call, all cut when the call ends.

A voice agent asks again when the user speaks over it: the answer still streaming for that call
was talked over, so the new request cuts it (and one call can hold only one answer slot, however
many requests its secret sends). Ending a call cuts its stream too, so nothing is said or stored
for a call after its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class CallStreams:
    """The task streaming each call's answer; the endpoint registers, whoever ends a call cuts."""

    def __init__(self) -> None:
        self._streams: dict[str, asyncio.Task[object]] = {}

    @contextlib.contextmanager
    def streaming(self, call_id: str) -> Iterator[None]:
        """The current task streams `call_id`'s answer for the body; an earlier one is cut."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("streaming() needs a running task")
        earlier = self._streams.get(call_id)
        if earlier is not None and earlier is not task:
            earlier.cancel()  # talked over: the user asked again
        self._streams[call_id] = task
        try:
            yield
        finally:
            if self._streams.get(call_id) is task:
                del self._streams[call_id]

    def cut(self, call_id: str) -> bool:
        """Cut the answer streaming to `call_id`, if one is; whether one was."""
        task = self._streams.pop(call_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    def __len__(self) -> int:
        return len(self._streams)
