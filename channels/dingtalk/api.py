"""Async DingTalk OpenAPI client: gateway ticket, access token, AI cards, robot and webhook sends,
and a sender's profile from the contacts API (on the older `oapi` host).

The SDK's own helpers block the loop, open a session per call and swallow failures
(docs/platforms/dingtalk.md §5.1); this client is non-blocking, bounded by a timeout, and turns
every failure into one of `common.errors` with a message that never carries a credential.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Unpack

from channels.dingtalk.config import DEFAULT_OAPI_BASE
from channels.http import MAX_PLATFORM_MESSAGE, Answer, HttpOptions, PlatformApi
from channels.model import SenderProfile
from channels.provider import ProfileUnavailable
from common.errors import (
    AuthError,
    ChannelError,
    PermanentError,
    RateLimited,
    TransientError,
)
from common.retry_after import retry_after

TOKEN_HEADER = "x-acs-dingtalk-access-token"  # noqa: S105 - a header name, not a secret
TOKEN_MARGIN = 300.0  # refresh this long before DingTalk's stated expiry, as the SDK does
BATCH_LIMIT = 20  # oToMessages/batchSend takes at most 20 userIds
_THROTTLE = re.compile(r"qps|throttl|limit|flow ?control|too many|频率|限流", re.IGNORECASE)
_TRANSIENT_CODES = {"systemError", "ServiceUnavailable", "InternalError"}
_RETRY_AUTH_CODES = {"InvalidAuthentication"}  # a stale token: refresh and retry once
# The oapi host answers HTTP 200 with an `errcode` (docs/platforms/dingtalk.md §3.6); 88 is
# "authentication failed" with the real reason in `sub_code`.
_OAPI_STALE_TOKEN = {"40001", "40014", "42001"}  # invalid or expired access_token
_OAPI_NO_PERMISSION = {"60011"}
_OAPI_OUT_OF_RANGE = {"50002"}  # the member lies outside the app's contacts or visible range
_OAPI_THROTTLED = {"90001", "90002", "90003", "90004", "90005", "90006"}
_OAPI_TRANSIENT = {"-1"}  # "system busy"
PROFILE_PERMISSION = (
    "qyapi_get_member (成员信息读权限), and for the fields "
    "企业员工手机号信息 (mobile) and 邮箱等个人信息 (e-mail)"
)
PROFILE_RANGE = (
    "a contacts range (通讯录权限 > 授权范围) and a visible range that include the sender"
)


def _oapi_code(payload: Any) -> str:
    """The errcode of an oapi answer, the sub_code when the errcode is 88; "0" is success."""
    if not isinstance(payload, dict):
        return ""
    code = str(payload.get("errcode", ""))
    if code == "88" and payload.get("sub_code") not in (None, ""):
        return str(payload["sub_code"])
    return code


def _oapi_message(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    message = payload.get("sub_msg") or payload.get("errmsg") or ""
    return str(message)[:MAX_PLATFORM_MESSAGE]


def _field(result: dict[str, Any], *keys: str) -> str:
    """The first of `keys` holding a non-empty string (DingTalk omits what it may not show)."""
    for key in keys:
        value = result.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return ""


def _platform_error(payload: Any) -> tuple[str, str]:
    """(code, message) from either error style: `code`/`message` or `errcode`/`errmsg`."""
    if not isinstance(payload, dict):
        return "", ""
    code = payload.get("code", payload.get("errcode", ""))
    message = payload.get("message", payload.get("errmsg", ""))
    return str(code or ""), str(message or "")[:MAX_PLATFORM_MESSAGE]


class DingTalkApi(PlatformApi):
    """One app's OpenAPI client; share it between all calls of a channel."""

    platform = "dingtalk"
    token_margin = TOKEN_MARGIN

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_base: str,
        robot_code: str,
        oapi_base: str = DEFAULT_OAPI_BASE,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(app_id=client_id, app_secret=client_secret, base_url=api_base, **options)
        self._robot_code = robot_code or client_id
        self._oapi = oapi_base.rstrip("/")

    # -- plumbing ----------------------------------------------------------------------------------

    def _token_headers(self, token: str) -> dict[str, str]:
        return {TOKEN_HEADER: token}

    def _token_rejected(self, answer: Answer) -> bool:
        return answer.status == 401 or _platform_error(answer.payload)[0] in _RETRY_AUTH_CODES

    def _error(self, name: str, answer: Answer, *, credentials: bool) -> ChannelError:
        """Classifies a failed answer. `credentials`: the call authenticates with the secret."""
        status = answer.status
        code, message = _platform_error(answer.payload)
        detail = self._status_text(name, status, code, message)
        if status == 429:
            return RateLimited(detail, retry_after(answer.headers))
        if status == 403:
            if _THROTTLE.search(code) or _THROTTLE.search(message):
                return RateLimited(detail, retry_after(answer.headers))
            return AuthError(detail)  # a permission the app was not granted
        if status == 401 or code in _RETRY_AUTH_CODES:
            return AuthError(detail)
        if status >= 500 or status == 408 or code in _TRANSIENT_CODES:
            return TransientError(detail)
        if credentials and status == 400:
            return AuthError(detail)  # appKey/appSecret rejected
        if 400 <= status < 500:
            return PermanentError(detail)
        return TransientError(detail)  # 1xx/3xx: nothing we asked for

    async def _call(self, name: str, method: str, path: str, body: dict[str, Any]) -> Any:
        """A token-bearing call; a rejected token is refreshed and the call retried once."""
        answer = await self._send(name, method, self._base + path, body=body, authorized=True)
        if answer.ok:
            return answer.payload
        raise self._error(name, answer, credentials=False)

    # -- gateway and token -------------------------------------------------------------------------

    async def open_connection(
        self, subscriptions: list[dict[str, str]], ua: str
    ) -> tuple[str, str]:
        """Asks the gateway for a Stream endpoint and a single-use ticket."""
        name = "gateway.open"
        body = {
            "clientId": self.app_id,
            "clientSecret": self._secret,
            "subscriptions": subscriptions,
            "ua": ua,
            "localIp": "",
        }
        url = self._base + "/v1.0/gateway/connections/open"
        answer = await self._send(name, "POST", url, body=body)
        if not answer.ok:
            raise self._error(name, answer, credentials=True)
        endpoint, ticket = answer.get("endpoint"), answer.get("ticket")
        if (
            not isinstance(endpoint, str)
            or not isinstance(ticket, str)
            or not endpoint
            or not ticket
        ):
            raise TransientError(f"dingtalk {name}: answer without endpoint or ticket")
        self._remember(ticket)
        return endpoint, ticket

    async def access_token(self) -> str:
        """A valid access token, refreshed ahead of expiry; concurrent callers share one refresh."""
        return await self._tokens.get()

    async def _fetch_token(self) -> tuple[str, float]:
        name = "oauth2.accessToken"
        url = self._base + "/v1.0/oauth2/accessToken"
        body = {"appKey": self.app_id, "appSecret": self._secret}
        answer = await self._send(name, "POST", url, body=body)
        if not answer.ok:
            raise self._error(name, answer, credentials=True)
        return self._token_from(name, answer, "accessToken", "expireIn")

    # -- cards -------------------------------------------------------------------------------------

    async def create_and_deliver_card(
        self,
        *,
        template_id: str,
        out_track_id: str,
        card_data: dict[str, str],
        conversation_type: str,
        conversation_id: str,
        sender_staff_id: str,
        at_user_ids: dict[str, str] | None = None,
    ) -> None:
        """Creates a card and delivers it to the chat; raises if any space refused it."""
        body: dict[str, Any] = {
            "cardTemplateId": template_id,
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": card_data},
            "callbackType": "STREAM",
            "userIdType": 1,
        }
        if conversation_type == "1":
            body["openSpaceId"] = f"dtv1.card//IM_ROBOT.{sender_staff_id}"
            body["imRobotOpenSpaceModel"] = {"supportForward": True}
            body["imRobotOpenDeliverModel"] = {
                "spaceType": "IM_ROBOT",
                "robotCode": self._robot_code,
            }
        elif conversation_type == "2":
            body["openSpaceId"] = f"dtv1.card//IM_GROUP.{conversation_id}"
            body["imGroupOpenSpaceModel"] = {"supportForward": True}
            deliver: dict[str, Any] = {"robotCode": self._robot_code}
            if at_user_ids:
                deliver["atUserIds"] = at_user_ids
            body["imGroupOpenDeliverModel"] = deliver
        else:
            raise ValueError(f"conversation_type must be '1' or '2', got {conversation_type!r}")
        name = "card.createAndDeliver"
        payload = await self._call(name, "POST", "/v1.0/card/instances/createAndDeliver", body)
        self._check_success(name, payload)
        result = payload.get("result") if isinstance(payload, dict) else None
        results = result.get("deliverResults") if isinstance(result, dict) else None
        for delivery in results or []:
            if isinstance(delivery, dict) and delivery.get("success") is False:
                error = self.scrub(str(delivery.get("errorMsg", ""))[:MAX_PLATFORM_MESSAGE])
                space = delivery.get("spaceType", "")
                raise PermanentError(f"dingtalk {name}: delivery to {space} failed: {error}")

    async def update_card(self, out_track_id: str, card_data: dict[str, str]) -> None:
        """Updates the given card data keys, leaving the others as they are."""
        body = {
            "outTrackId": out_track_id,
            "cardData": {"cardParamMap": card_data},
            "cardUpdateOptions": {"updateCardDataByKey": True},
        }
        name = "card.update"
        self._check_success(name, await self._call(name, "PUT", "/v1.0/card/instances", body))

    async def stream_card(
        self,
        out_track_id: str,
        key: str,
        content: str,
        *,
        finalize: bool = False,
        error: bool = False,
    ) -> None:
        """Replaces the streamed text of `key` with `content` (always the full text so far)."""
        body = {
            "outTrackId": out_track_id,
            "guid": uuid.uuid4().hex,
            "key": key,
            "content": content,
            "isFull": True,
            "isFinalize": finalize,
            "isError": error,
        }
        name = "card.streaming"
        self._check_success(name, await self._call(name, "PUT", "/v1.0/card/streaming", body))

    def _check_success(self, name: str, payload: Any) -> None:
        if isinstance(payload, dict) and payload.get("success") is False:
            code, message = _platform_error(payload)
            detail = self._text(name, f"success false {code} {message}".rstrip())
            if _THROTTLE.search(code) or _THROTTLE.search(message):
                raise RateLimited(detail)
            raise PermanentError(detail)

    # -- messages ----------------------------------------------------------------------------------

    async def _session_post(self, webhook_url: str, body: dict[str, Any]) -> None:
        name = "robot.sendBySession"
        answer = await self._send(name, "POST", webhook_url, body=body)
        if not answer.ok:
            raise self._error(name, answer, credentials=False)
        errcode = answer.payload.get("errcode", 0) if isinstance(answer.payload, dict) else 0
        if errcode not in (0, "0"):
            code, message = _platform_error(answer.payload)
            detail = self._text(name, f"errcode {code}: {message}")
            # 130101 is the robot's "more than 20 messages a minute" throttle.
            if str(errcode) == "130101" or _THROTTLE.search(message):
                raise RateLimited(detail)
            raise PermanentError(detail)  # e.g. 300001: the session expired; use the robot API

    async def send_by_session(
        self, webhook_url: str, *, markdown: str, title: str, at_staff_id: str | None = None
    ) -> None:
        """Answers through an incoming message's sessionWebhook, as markdown."""
        body: dict[str, Any] = {
            "msgtype": "markdown",
            "markdown": {"title": title, "text": markdown},
        }
        if at_staff_id:
            body["at"] = {"atUserIds": [at_staff_id]}
        await self._session_post(webhook_url, body)

    async def send_to_users(self, user_ids: list[str], *, markdown: str, title: str) -> None:
        """Sends a markdown message to users' single chats with the bot, 20 users per call."""
        param = json.dumps({"title": title, "text": markdown}, ensure_ascii=False)
        for start in range(0, len(user_ids), BATCH_LIMIT):
            body = {
                "robotCode": self._robot_code,
                "userIds": user_ids[start : start + BATCH_LIMIT],
                "msgKey": "sampleMarkdown",
                "msgParam": param,
            }
            await self._call("robot.batchSend", "POST", "/v1.0/robot/oToMessages/batchSend", body)

    async def send_to_group(self, open_conversation_id: str, *, markdown: str, title: str) -> None:
        """Sends a markdown message to a group the bot is in."""
        body = {
            "robotCode": self._robot_code,
            "openConversationId": open_conversation_id,
            "msgKey": "sampleMarkdown",
            "msgParam": json.dumps({"title": title, "text": markdown}, ensure_ascii=False),
        }
        await self._call("robot.groupSend", "POST", "/v1.0/robot/groupMessages/send", body)

    # -- contacts (oapi host) ----------------------------------------------------------------------

    async def user_profile(self, staff_id: str) -> SenderProfile:
        """A member's e-mail, mobile and job number by staff id (`topapi/v2/user/get`).

        DingTalk leaves out the e-mail and the mobile unless the app was granted them (they come
        back as ""); raises ProfileUnavailable when the app may not read members at all.
        """
        name = "user.get"
        payload = await self._oapi_call(
            name, "/topapi/v2/user/get", {"userid": staff_id, "language": "zh_CN"}
        )
        result = payload.get("result")
        if not isinstance(result, dict):
            raise TransientError(self._text(name, "answer without result"))
        return SenderProfile(
            email=_field(result, "email", "org_email"),
            mobile=_field(result, "mobile"),
            employee_no=_field(result, "job_number"),
        )

    async def _oapi_call(self, name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A call to the oapi host, the access token in its query string; a token refused as
        invalid or expired is refreshed and the call made again, once."""
        url = self._oapi + path
        token = await self._tokens.get()
        answer = await self._send(name, "POST", url, body=body, params={"access_token": token})
        if _oapi_code(answer.payload) in _OAPI_STALE_TOKEN and self._tokens.invalidate(token):
            token = await self._tokens.get()
            answer = await self._send(name, "POST", url, body=body, params={"access_token": token})
        if not answer.ok:
            raise self._error(name, answer, credentials=False)
        code = _oapi_code(answer.payload)
        if code not in _OAPI_STALE_TOKEN:
            self._tokens.accepted(token)
        if code == "0" and isinstance(answer.payload, dict):
            return answer.payload
        raise self._oapi_error(name, code, _oapi_message(answer.payload))

    def _oapi_error(self, name: str, code: str, message: str) -> ChannelError:
        detail = self._text(name, f"errcode {code or '(none)'}: {message}".rstrip(": "))
        if code in _OAPI_NO_PERMISSION:
            return ProfileUnavailable(
                f"{detail}; grant the app {PROFILE_PERMISSION}", PROFILE_PERMISSION
            )
        if code in _OAPI_OUT_OF_RANGE:
            return ProfileUnavailable(f"{detail}; give the app {PROFILE_RANGE}", PROFILE_RANGE)
        if code in _OAPI_STALE_TOKEN:
            return AuthError(detail)
        if code in _OAPI_THROTTLED or _THROTTLE.search(message):
            return RateLimited(detail)
        if code in _OAPI_TRANSIENT or not code:
            return TransientError(detail)
        return PermanentError(detail)  # e.g. 33012 / 60121: no such member
