"""The emulator's CardKit: card entities, streamed element content and settings.

Follows docs/platforms/feishu.md §4.4; choices where it is silent (unverified, listed in its §6):
* Rate limits (10 operations per second per card, 50 per second per app) answer HTTP 429 with
  code 99991400 and an `x-ogw-ratelimit-reset` header, Feishu's gateway-level limit shape.
  Only accepted operations count toward the budget.
* An invalid `element_id` answers 300304; a malformed card JSON 200621.
* An element that does not exist answers 300310, like one that is not text.
* A failed operation never advances the card's sequence.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from channels.emulator import http
from channels.feishu.emulator.openapi import json_object, required_str
from channels.feishu.emulator.state import (
    TEXT_TAGS,
    ApiError,
    CardOp,
    CardState,
    EmulatorState,
    FeishuApp,
)

CARDS_PATH = "/open-apis/cardkit/v1/cards"
CARD_LIMIT = 30 * 1024
MAX_ELEMENTS = 200
CONTENT_LIMIT = 100_000
SEQUENCE_MAX = 2**31 - 1
CARD_OPS_PER_SECOND = 10
APP_OPS_PER_SECOND = 50
ELEMENT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,19}")

Authenticate = Callable[[web.Request], FeishuApp]


def _rate_limited() -> ApiError:
    return ApiError(
        429, 99991400, "request trigger frequency limit", {"x-ogw-ratelimit-reset": "1"}
    )


def parse_card(data: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A validated card JSON 2.0 and its elements by id."""
    if not isinstance(data, str):
        raise ApiError(400, 99992402, "field validation failed: data must be a string")
    if len(data.encode()) > CARD_LIMIT:
        raise ApiError(400, 200860, "card content exceeds the size limit")
    card = http.loaded_object(data, lambda _: ApiError(400, 200621, "parse card json err"))
    if card.get("schema") != "2.0":
        raise ApiError(400, 300303, "card schema must be 2.0")
    elements: dict[str, dict[str, Any]] = {}
    count = 0

    def walk(node: Any) -> None:
        nonlocal count
        if isinstance(node, dict):
            if "tag" in node:
                count += 1
                element_id = node.get("element_id")
                if element_id is not None:
                    if not isinstance(element_id, str) or not ELEMENT_ID.fullmatch(element_id):
                        raise ApiError(400, 300304, f"invalid element_id {element_id!r}")
                    if element_id in elements:
                        raise ApiError(400, 300301, f"duplicate element_id {element_id}")
                    elements[element_id] = node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card.get("body", {}))
    if count > MAX_ELEMENTS:
        raise ApiError(400, 300305, "too many card elements")
    return card, elements


def _streaming_mode(card: dict[str, Any]) -> bool:
    config = card.get("config")
    return bool(config.get("streaming_mode")) if isinstance(config, dict) else False


def _fingerprint(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


class CardKit:
    """Route handlers for `/open-apis/cardkit/v1/cards...`."""

    def __init__(
        self,
        state: EmulatorState,
        authenticate: Authenticate,
        *,
        card_ops_per_second: int = CARD_OPS_PER_SECOND,
        app_ops_per_second: int = APP_OPS_PER_SECOND,
    ) -> None:
        self._state = state
        self._authenticate = authenticate
        self.card_ops_per_second = card_ops_per_second
        self.app_ops_per_second = app_ops_per_second
        self._card_ops: dict[str, deque[float]] = {}
        self._app_ops: dict[str, deque[float]] = {}
        self._next_id = int(time.time() * 1000) * 1000

    def add_routes(self, app: web.Application) -> None:
        """Registers the CardKit routes."""
        r = app.router
        r.add_post(CARDS_PATH, self._create)
        r.add_put(CARDS_PATH + "/{card_id}", self._update)
        r.add_put(CARDS_PATH + "/{card_id}/elements/{element_id}/content", self._content)
        r.add_patch(CARDS_PATH + "/{card_id}/settings", self._settings)

    def _budget(self, app_id: str, card_id: str | None) -> None:
        now = time.monotonic()
        windows = [(self._app_ops.setdefault(app_id, deque()), self.app_ops_per_second)]
        if card_id is not None:
            windows.append((self._card_ops.setdefault(card_id, deque()), self.card_ops_per_second))
        for window, limit in windows:
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= limit:
                raise _rate_limited()

    def _spend(self, app_id: str, card_id: str | None) -> None:
        now = time.monotonic()
        self._app_ops.setdefault(app_id, deque()).append(now)
        if card_id is not None:
            self._card_ops.setdefault(card_id, deque()).append(now)

    def _card(self, app: FeishuApp, card_id: str) -> CardState:
        card = self._state.cards.get(card_id)
        if card is None:
            raise ApiError(400, 200740, "card entity not found")
        if card.app_id != app.app_id:
            raise ApiError(400, 300311, "the app does not own this card")
        self._state.refresh(card)
        return card

    def _replayed(self, card: CardState, body: dict[str, Any]) -> bool:
        """True for a retried operation (same uuid, same body); a reused uuid is an error."""
        op_uuid = body.get("uuid")
        if not isinstance(op_uuid, str) or not op_uuid:
            return False
        seen = card.uuids.get(op_uuid)
        if seen is None:
            return False
        if seen != _fingerprint(body):
            raise ApiError(400, 200770, "uuid was used for a different request")
        return True

    def _sequence(self, card: CardState, body: dict[str, Any]) -> int:
        sequence = body.get("sequence")
        if isinstance(sequence, bool) or not isinstance(sequence, int):
            raise ApiError(400, 99992402, "field validation failed: sequence is required")
        if not 1 <= sequence <= SEQUENCE_MAX:
            raise ApiError(400, 99992402, "field validation failed: sequence out of range")
        if sequence <= card.sequence:
            raise ApiError(400, 300317, "sequence number compare failed")
        return sequence

    def _apply(self, card: CardState, op: str, body: dict[str, Any], sequence: int) -> None:
        card.sequence = sequence
        op_uuid = body.get("uuid")
        if isinstance(op_uuid, str) and op_uuid:
            card.uuids[op_uuid] = _fingerprint(body)
        card.history.append(CardOp(time.monotonic(), op, dict(body)))
        self._spend(card.app_id, card.card_id)
        self._state.notify(card.chat_id or None)

    async def _create(self, request: web.Request) -> web.Response:
        app = self._authenticate(request)
        body = await json_object(request)
        if body.get("type") != "card_json":
            raise ApiError(400, 99992402, "field validation failed: type must be card_json")
        card_json, elements = parse_card(body.get("data"))
        self._budget(app.app_id, None)
        self._next_id += 1
        card_id = str(self._next_id)
        now = time.monotonic()
        streaming = _streaming_mode(card_json)
        card = CardState(
            card_id=card_id,
            app_id=app.app_id,
            card=card_json,
            elements=elements,
            created_at=now,
            streaming=streaming,
            streaming_enabled_at=now,
            ever_streamed=streaming,
        )
        card.history.append(CardOp(now, "create", dict(body)))
        self._state.cards[card_id] = card
        self._spend(app.app_id, None)
        self._state.notify()
        return web.json_response({"code": 0, "msg": "success", "data": {"card_id": card_id}})

    async def _content(self, request: web.Request) -> web.Response:
        app = self._authenticate(request)
        body = await json_object(request)
        card = self._card(app, request.match_info["card_id"])
        if self._replayed(card, body):
            return web.json_response({"code": 0, "msg": "success", "data": {}})
        self._budget(app.app_id, card.card_id)
        sequence = self._sequence(card, body)
        if card.timed_out and not card.streaming:
            raise ApiError(400, 200850, "card streaming timed out")
        if not card.streaming:
            raise ApiError(400, 300309, "streaming mode is closed")
        element_id = request.match_info["element_id"]
        element = card.elements.get(element_id)
        if element is None or element.get("tag") not in TEXT_TAGS:
            raise ApiError(400, 300310, "element is not a markdown or plain_text element")
        content = required_str(body, "content")
        if len(content) > CONTENT_LIMIT:
            raise ApiError(400, 99992402, "field validation failed: content too long")
        element["content"] = content
        card.last_element = element_id
        self._apply(card, "content", body, sequence)
        return web.json_response({"code": 0, "msg": "success", "data": {}})

    async def _settings(self, request: web.Request) -> web.Response:
        app = self._authenticate(request)
        body = await json_object(request)
        card = self._card(app, request.match_info["card_id"])
        if self._replayed(card, body):
            return web.json_response({"code": 0, "msg": "success", "data": {}})
        try:
            settings = json.loads(required_str(body, "settings"))
        except ValueError as exc:
            raise ApiError(400, 99992402, "field validation failed: settings is not JSON") from exc
        config = settings.get("config") if isinstance(settings, dict) else None
        if not isinstance(config, dict) and "card_link" not in (settings or {}):
            raise ApiError(400, 99992402, "field validation failed: settings needs config")
        self._budget(app.app_id, card.card_id)
        sequence = self._sequence(card, body)
        config = config if isinstance(config, dict) else {}
        summary = config.get("summary")
        if isinstance(summary, dict) and isinstance(summary.get("content"), str):
            card.summary = summary["content"]
        mode = config.get("streaming_mode")
        if mode is True:
            card.streaming = card.ever_streamed = True
            card.streaming_enabled_at = time.monotonic()
            card.timed_out = card.closed_by_settings = False
        elif mode is False:
            card.streaming = False
            card.closed_by_settings = True
        self._apply(card, "settings", body, sequence)
        return web.json_response({"code": 0, "msg": "success", "data": {}})

    async def _update(self, request: web.Request) -> web.Response:
        app = self._authenticate(request)
        body = await json_object(request)
        card = self._card(app, request.match_info["card_id"])
        if self._replayed(card, body):
            return web.json_response({"code": 0, "msg": "success", "data": {}})
        entity = body.get("card")
        if not isinstance(entity, dict) or entity.get("type") != "card_json":
            raise ApiError(400, 99992402, "field validation failed: card.type must be card_json")
        card_json, elements = parse_card(entity.get("data"))
        self._budget(app.app_id, card.card_id)
        sequence = self._sequence(card, body)
        card.card, card.elements = card_json, elements
        if card.last_element not in elements:
            card.last_element = ""
        self._apply(card, "update", body, sequence)
        return web.json_response({"code": 0, "msg": "success", "data": {}})
