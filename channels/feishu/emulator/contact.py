"""The emulator's contacts API: `GET /open-apis/contact/v3/users/{open_id}`, one user's profile.

Follows docs/platforms/feishu.md §4.8; choices where it is silent (unverified, listed in its §6):
* Every `ou_` open id is a user: unless registered with `add_user`, `ou_alice` is "alice" with
  e-mail `alice@example.com` and a mobile and employee number derived from the id (stable).
* Only `user_id_type=open_id` (the default here) is known; another type, or an id that is not an
  open id, answers 99992402 (field validation failed).
* `denied` plays an app without the permission: "scope" (no contacts API scope: HTTP 400, code
  99991672, the scopes named in `msg` and `error.permission_violations`), "range" (the user lies
  outside the app's contacts range: HTTP 403, code 41050) or "fields" (the call succeeds, the
  e-mail, mobile and employee number field permissions are missing: those fields are left out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from channels.feishu.emulator.state import ApiError, FeishuApp, error_body, stable_hex

USERS_PATH = "/open-apis/contact/v3/users"
DENIALS = ("scope", "range", "fields")
# any one of these lets an app call the user-info API (the contacts API permission)
API_SCOPES = (
    "contact:contact.base:readonly",
    "contact:contact:access_as_app",
    "contact:contact:readonly",
    "contact:contact:readonly_as_app",
)
FIELD_KEYS = ("email", "enterprise_email", "mobile", "employee_no")

Authenticate = Callable[[web.Request], FeishuApp]


@dataclass(frozen=True, slots=True)
class ContactUser:
    """One person in the emulated tenant's contacts."""

    open_id: str
    name: str = ""
    email: str = ""
    mobile: str = ""
    employee_no: str = ""
    enterprise_email: str = ""

    @classmethod
    def derived(cls, open_id: str) -> ContactUser:
        """The profile an unregistered open id has: `ou_alice` is alice@example.com."""
        handle = open_id.removeprefix("ou_") or "user"
        digits = str(int(stable_hex("mobile", open_id, length=12), 16))[-8:].zfill(8)
        return cls(
            open_id=open_id,
            name=handle.capitalize(),
            email=f"{handle}@example.com",
            mobile=f"+86139{digits}",
            employee_no="E" + str(int(stable_hex("employee", open_id, length=8), 16))[-6:],
        )


class Contact:
    """Route handler for one user's profile, and the users and denial mode behind it."""

    def __init__(self, authenticate: Authenticate, *, denied: str = "") -> None:
        self._authenticate = authenticate
        self.users: dict[str, ContactUser] = {}
        self.denied = ""
        self.deny(denied)

    def add_routes(self, app: web.Application) -> None:
        """Registers the contacts route."""
        app.router.add_get(USERS_PATH + "/{user_id}", self._user)

    def add_user(self, open_id: str, **fields: str) -> ContactUser:
        """Registers (or replaces) a user; fields not given are the derived ones."""
        if not open_id.startswith("ou_"):
            raise ValueError("an open_id starts with ou_")
        user = dataclasses.replace(ContactUser.derived(open_id), **fields)
        self.users[open_id] = user
        return user

    def deny(self, mode: str | None) -> str:
        """Plays an app without the permission ("scope", "range", "fields"); "" or None: granted."""
        mode = mode or ""
        if mode and mode not in DENIALS:
            raise ValueError(f"denied must be one of {', '.join(DENIALS)} or empty")
        self.denied = mode
        return mode

    def user(self, open_id: str) -> ContactUser:
        """The registered user, else the derived one."""
        return self.users.get(open_id) or ContactUser.derived(open_id)

    async def _user(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        open_id = request.match_info["user_id"]
        if request.query.get("user_id_type", "open_id") != "open_id":
            raise ApiError(400, 99992402, "field validation failed: the emulator knows open_id")
        if not open_id.startswith("ou_"):
            raise ApiError(400, 99992402, "field validation failed: user_id is not an open_id")
        if self.denied == "scope":
            return _scope_missing()
        if self.denied == "range":
            raise ApiError(403, 41050, "no user authority error")
        user = self.user(open_id)
        body: dict[str, Any] = {
            "open_id": user.open_id,
            "union_id": "on_" + stable_hex("union", user.open_id),
            "name": user.name,
            "en_name": user.name,
            "email": user.email,
            "enterprise_email": user.enterprise_email,
            "mobile": user.mobile,
            "mobile_visible": True,
            "employee_no": user.employee_no,
            "employee_type": 1,
            "status": {"is_activated": True, "is_frozen": False, "is_resigned": False},
        }
        if self.denied == "fields":
            for key in FIELD_KEYS:
                del body[key]
        return web.json_response({"code": 0, "msg": "success", "data": {"user": body}})


def _scope_missing() -> web.Response:
    scopes = ", ".join(API_SCOPES)
    body = error_body(
        99991672, f"Access denied. One of the following scopes is required: [{scopes}]."
    )
    body["error"]["permission_violations"] = [
        {"type": "action_scope_required", "subject": scope} for scope in API_SCOPES
    ]
    return web.json_response(body, status=400)
