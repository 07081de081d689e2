"""What every emulator's server shares: one port for the gateway, the platform API and the control
plane; the faults every platform offers; and the observations tests and tools read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

from aiohttp import web

from channels.emulator.gateway import GatewayBase, SocketInfo
from channels.emulator.http import recording_middleware
from channels.emulator.state import C, EmulatorStateBase, F, K, RecordedCall, wait_until

T = TypeVar("T")
I = TypeVar("I", bound=SocketInfo)  # noqa: E741 - a platform's connection snapshot


class EmulatorServer(Generic[F, C, K, I]):
    """A local platform on one port; a platform adds its routes, fault answers and call fields."""

    secret_fields: frozenset[str] = frozenset()  # request fields masked in the call record
    state: EmulatorStateBase[F, C, K]
    gateway: GatewayBase[Any, Any]

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._url = ""
        self.stopping = asyncio.Event()  # set on stop: injected delays and downtimes end at once
        self._outages: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """`http://host:port`: the platform's API base for clients, and the control plane."""
        if not self._url:
            raise RuntimeError("emulator not started")
        return self._url

    @property
    def apps(self) -> list[str]:
        """Configured app ids."""
        return list(self.state.apps)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Binds and serves; returns the base URL."""
        app = web.Application(middlewares=[recording_middleware(self, self.secret_fields)])
        self.add_routes(app)
        # Short shutdown: in-flight handlers are our own delays and closed sockets.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        public_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only compared
        self._url = f"http://{public_host}:{bound_port}"
        return self._url

    async def stop(self) -> None:
        """Closes every socket and the server; leaves no task behind."""
        self.stopping.set()
        for task in list(self._outages):
            task.cancel()
        await asyncio.gather(*self._outages, return_exceptions=True)
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what a platform adds --------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Registers the gateway, platform API and control-plane routes."""
        raise NotImplementedError

    def fault_response(self, request: web.Request, fault: F) -> web.Response:
        """The answer of an injected fault that replaces the real one."""
        raise NotImplementedError

    def call_record(
        self, request: web.Request, response: web.StreamResponse | None, call: RecordedCall
    ) -> C:
        """The platform's record of one call (`response` is None when a route raised)."""
        raise NotImplementedError

    def describe(self) -> list[str]:
        """What a user needs to connect a client, printed by `channeld emulate`."""
        return [f"emulator listening on {self.url}"]

    async def send_user_message(self, *args: Any, **kwargs: Any) -> Any:
        """A user writes to the bot; the answer's `to_json()` names the chat it went to."""
        raise NotImplementedError

    def add_fault(self, *args: Any, **kwargs: Any) -> F:
        """Answers (or delays) the next matching calls."""
        raise NotImplementedError

    def downtime(self, seconds: float, status: int = 503) -> F:
        """Every API call answers `status` for `seconds` (on the platforms that offer it)."""
        raise NotImplementedError

    def acks(self, *args: Any, **kwargs: Any) -> list[Any]:
        """What the clients sent back, in arrival order."""
        raise NotImplementedError

    # -- faults ----------------------------------------------------------------------------------

    def clear_faults(self) -> None:
        """Removes every injected fault and the global latency."""
        self.state.faults.clear()
        self.state.latency = 0.0

    def temporary(self, fault: F, seconds: float) -> F:
        """Removes an injected `fault` after `seconds` (or at stop): an outage that ends."""

        async def end() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), seconds)
            with contextlib.suppress(ValueError):
                self.state.faults.remove(fault)
            self.state.changed()

        task = asyncio.create_task(end())
        self._outages.add(task)
        task.add_done_callback(self._outages.discard)
        return fault

    def set_latency(self, seconds: float) -> None:
        """Delays every platform call (not the control plane)."""
        self.state.latency = seconds

    def expire_tokens(self) -> int:
        """Invalidates every access token issued so far."""
        return self.state.expire_tokens()

    async def drop(
        self,
        app_id: str | None = None,
        *,
        mode: str = "abort",
        code: int | None = None,
        connection_id: str | None = None,
    ) -> int:
        """Kills sockets: `abort` (no close frame) or `close` (`code`, else the platform's own)."""
        return await self.gateway.drop(app_id, mode=mode, code=code, connection_id=connection_id)

    def silence(
        self, app_id: str | None = None, on: bool = True, *, connection_id: str | None = None
    ) -> int:
        """Sockets stay open but get no pings, pongs or deliveries (half-open zombies)."""
        return self.gateway.silence(app_id, on, connection_id=connection_id)

    # -- observations ----------------------------------------------------------------------------

    def connections(self, app_id: str | None = None) -> list[I]:
        """Every connection ever opened, closed ones included."""
        return [c.info() for c in self.gateway.sockets(app_id)]

    def live_connections(self, app_id: str | None = None) -> list[I]:
        """Sockets that are still open."""
        return [c for c in self.connections(app_id) if c.live]

    def calls(self, path: str | None = None, method: str | None = None) -> list[C]:
        """Recorded HTTP calls, optionally filtered by exact path and method."""
        return [
            c
            for c in self.state.calls
            if (path is None or c.path == path) and (method is None or c.method == method.upper())
        ]

    def card(self, card_id: str) -> K | None:
        """A copy of one card's state."""
        return self.state.card_copy(card_id)

    def cards(self) -> list[K]:
        """Copies of every card, oldest first."""
        return [c for c in (self.state.card_copy(k) for k in self.state.cards) if c is not None]

    def chat_view(self, chat_id: str) -> dict[str, Any] | None:
        """What members see in a chat: user messages, bot messages and cards as they are now."""
        return self.state.chat_view(chat_id)

    async def wait_until(
        self,
        predicate: Callable[[Self], T],
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for a condition, not for one await
    ) -> T:
        """Returns the predicate's first truthy value; re-checked on every state change."""
        return await wait_until(lambda: predicate(self), self.state.wait_changed, timeout)
