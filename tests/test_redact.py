"""`common.redact`: the one scrubber for error texts of platform clients, agents and the API."""

from __future__ import annotations

from pydantic import SecretStr

from channels.dingtalk.config import DingTalkChannelConfig
from channels.manager import MAX_ERROR_CHARS, public_error
from common.redact import MASK, Scrubber, scrub

SECRET = "app-secret-91c4e7"


def test_given_secret_values_are_masked_wherever_they_stand() -> None:
    text = f"rejected {SECRET} (again: x{SECRET}x)"
    assert scrub(text, [SECRET]) == "rejected *** (again: x***x)"
    assert scrub(text, ["", SECRET]) == scrub(text, [SECRET])  # an unset secret masks nothing


def test_credential_shapes_are_masked_without_being_told_the_value() -> None:
    cases = {
        "POST https://oapi.example/robot/send?session=abc123&x=1": "?session=***&x=1",
        "GET /connect?ticket=t-99 failed": "?ticket=***",
        "url ?access_token=tok.en-1 refused": "?access_token=***",
        'echo {"app_secret": "s3cr3t", "other": "kept"}': '{"app_secret": "***", "other": "kept"}',
        "'Authorization': 'Bearer eyJhbGciOi'": "'Authorization': 'Bearer ***'",
        "header bearer abc.def.ghi sent": "bearer *** sent",
        "password=hunter2;": "password=***;",
        "Incorrect API key provided: sk-proj-AbC123xyz456": "key provided: sk-***",
        "key-0123456789abcdef rejected": "key-*** rejected",
    }
    for text, kept in cases.items():
        assert kept in scrub(text), (text, scrub(text))
    for text in cases:
        for value in ("abc123", "t-99", "tok.en-1", "s3cr3t", "eyJhbGciOi", "abc.def.ghi"):
            assert value not in scrub(text)


def test_ordinary_error_text_is_left_alone() -> None:
    for text in (
        "dingtalk card.streaming: HTTP 403 Forbidden.AccessDenied: no permission",
        "feishu im.send: HTTP 400 code 230001: token expired, try again",
        "agent 'main': rate limited (HTTP 429)",
        "monkey-business1234 and session expired",
    ):
        assert scrub(text) == text


def test_a_scrubber_remembers_the_credentials_a_client_was_handed() -> None:
    scrubber = Scrubber(SECRET, remember=2)
    scrubber.remember("token-one")
    assert scrubber(f"{SECRET} token-one token-two") == f"{MASK} {MASK} token-two"
    scrubber.remember("token-two")
    scrubber.remember("token-three")  # the oldest expired long ago: only the recent are kept
    assert scrubber("token-one token-two token-three") == f"token-one {MASK} {MASK}"


def test_public_error_masks_the_channel_secrets_on_one_bounded_line() -> None:
    config = DingTalkChannelConfig(id="d", client_id="ding-id", client_secret=SECRET)
    assert isinstance(config.client_secret, SecretStr)
    text = f"AuthError: dingtalk gateway.open: HTTP 400\n{SECRET} rejected; token=abc {'x' * 300}"
    shown = public_error(text, config)
    assert SECRET not in shown and "abc" not in shown
    assert "\n" not in shown
    assert shown.startswith("AuthError: dingtalk gateway.open: HTTP 400 *** rejected; token=***")
    assert len(shown) == MAX_ERROR_CHARS and shown.endswith("…")
    assert public_error("plain", None) == "plain"
