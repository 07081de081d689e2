"""The OpenAPI 3.1 document of the admin API; channel schemas come from the platform registry."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from channels import registry
from channels.platform import Platform
from channels.voice.requests import StartCall

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "401": _json(_ref("Error"), "missing or wrong bearer token"),
    "403": _json(
        _ref("Error"),
        "a Host this listener does not serve ([admin] allowed_hosts), or a change from another "
        "origin (Origin, Sec-Fetch-Site)",
    ),
    "404": _json(_ref("Error"), "unknown id"),
    "422": _json(_ref("Error"), "invalid input; `fields` names each offending field"),
}
UNSUPPORTED = _json(_ref("Error"), "a Content-Type other than application/json (UTF-8)")
SAFE = frozenset({"get", "head", "options"})
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any] | None = None,
    body: dict[str, Any] | None = None,
    status: str = "200",
    conflict: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok, **ERRORS}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["400"] = _json(_ref("Error"), "the body is not a JSON object")
    if conflict:
        op["responses"]["409"] = _json(_ref("Error"), conflict)
    return op


def _secrets_not_empty(schema: Any) -> None:
    """Secrets are refused when empty (a validator, invisible to pydantic's schema): say so."""
    if isinstance(schema, dict):
        if schema.get("format") == "password":
            schema.setdefault("minLength", 1)
        for value in schema.values():
            _secrets_not_empty(value)
    elif isinstance(schema, list):
        for value in schema:
            _secrets_not_empty(value)


def _channel_schemas(platforms: tuple[Platform[Any], ...]) -> dict[str, Any]:
    """Each platform's settings (the web page builds its forms from them), and their union."""
    schemas: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    for platform in platforms:
        schema = platform.form_schema(REF)
        _secrets_not_empty(schema)
        schemas.update(schema.pop("$defs", {}))
        schemas[platform.config.__name__] = schema
        mapping[platform.name] = REF.format(model=platform.config.__name__)
    union = {
        "discriminator": {"mapping": mapping, "propertyName": "type"},
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
    }
    return {**schemas, "ChannelSettings": union}


# what GET /api/v1/channels/{id} answers for a channel with voice: every secret, at any depth, ***
CHANNEL_EXAMPLE = {
    "id": "dingtalk-main",
    "type": "dingtalk",
    "agent": "default",
    "enabled": True,
    "source": "api",
    "version": 3,
    "settings": {
        "client_id": "dingxxxxxxxx",
        "client_secret": "***",
        "card_template_id": "tpl.ai.schema",
        "voice": {
            "public_base_url": "https://bot.example.com",
            "max_call_seconds": 1800,
            "zego": {
                "app_id": 1234567890,
                "server_secret": "***",
                "callback_secret": None,
                "agent_id": "channeld-voice",
                "api_base": "https://aigc-aiagent-api.zegotech.cn",
            },
            "aliyun": {
                "access_key_id": "LTAI5txxxxxxxx",
                "access_key_secret": "***",
                "region": "cn-shanghai",
                "agent_id": "a1b2c3",
                "llm_api_key": "***",
                "callback_token": "***",
                "endpoint": None,
            },
        },
    },
    "status": {"state": "connected", "reconnects": 0, "messages_received": 12},
    "voice_urls": {
        "llm_endpoint": "https://bot.example.com/voice/dingtalk-main/chat/completions",
        "aliyun_llm_base": "https://bot.example.com/voice/dingtalk-main",
        "callback": "https://bot.example.com/hooks/dingtalk-main/voice",
    },
}


def _schemas(platforms: tuple[Platform[Any], ...]) -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        **_channel_schemas(platforms),
        "Agent": {
            "type": "object",
            "required": ["name", "type", "circuit"],
            "properties": {
                "name": {"type": "string"},
                "type": {"type": "string", "examples": ["openai", "echo"]},
                "circuit": {"oneOf": [_ref("Circuit"), {"type": "null"}]},
            },
        },
        "Circuit": {
            "type": "object",
            "description": (
                "The agent's circuit breaker: closed (called as usual); open after "
                "circuit_failures consecutive failed answers (skipped without a request, its "
                "fallback answers) for circuit_cooldown seconds; half_open after that (one trial "
                "call at a time: success closes, failure reopens)."
            ),
            "required": ["state", "failures", "opened_at"],
            "properties": {
                "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                "failures": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "consecutive failed answers",
                },
                "opened_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "when it last opened (UTC); null while closed",
                },
            },
        },
        "ChannelPatch": {
            "type": "object",
            "description": (
                "Settings to change; a secret omitted, null or sent as *** keeps its value, at any "
                "depth. A section (a nested settings object such as voice or voice.zego) is merged "
                "key by key, recursively; any other object value is replaced whole; null removes "
                "an optional section, its secrets with it. A setting marked x-sends-secrets (where "
                "its section's secrets are sent, such as api_base or voice.zego.api_base) changes "
                "only with every stored secret of that section given again in the same request."
            ),
            "additionalProperties": True,
            "examples": [
                {"voice": {"max_call_seconds": 600}},
                {
                    "voice": {
                        "zego": {
                            "api_base": "https://aigc-aiagent-api-sgp.zegotech.cn",
                            "server_secret": "the ZEGO server secret, given again",
                        }
                    }
                },
                {"voice": None},
            ],
        },
        "ChannelStatus": {
            "type": "object",
            "properties": {
                "state": {
                    "enum": ["connected", "connecting", "disconnected", "disabled", "failed"]
                },
                "connected_at": nullable_str,
                "uptime_seconds": {"type": ["number", "null"]},
                "last_event_at": nullable_str,
                "last_error": nullable_str,
                "reconnects": {"type": "integer"},
                "messages_received": {"type": "integer"},
                "next_attempt_at": nullable_str,
            },
        },
        "Channel": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "agent": {"type": "string"},
                "enabled": {"type": "boolean"},
                "source": {"enum": ["config", "api"]},
                "version": {"type": "integer"},
                "settings": {"type": "object", "description": "secrets are always ***"},
                "status": _ref("ChannelStatus"),
                "webhook_url": {
                    "type": "string",
                    "description": "channels of webhook platforms only: the URL the platform "
                    "must call (from [webhooks] public_url, else the listen address)",
                },
                "voice_urls": _ref("VoiceUrls"),
            },
            "examples": [CHANNEL_EXAMPLE],
        },
        "VoiceUrls": {
            "type": "object",
            "description": "channels with a voice section only: the URLs to enter in the clouds' "
            "consoles, built from voice.public_base_url",
            "properties": {
                "llm_endpoint": {
                    "type": "string",
                    "description": "the voice LLM endpoint; channeld gives it to ZEGO with each "
                    "call (shown for checking)",
                },
                "aliyun_llm_base": {
                    "type": "string",
                    "description": "with voice.aliyun only: the base URL of the Alibaba agent's "
                    "self-developed (OpenAI spec) LLM node; Alibaba appends /chat/completions",
                },
                "callback": {
                    "type": "string",
                    "description": "where the clouds' consoles send the agent callbacks",
                },
            },
            "required": ["llm_endpoint", "callback"],
        },
        "Conversation": {
            "type": "object",
            "properties": {
                **{
                    k: {"type": "string"}
                    for k in (
                        "id",
                        "channel_id",
                        "key",
                        "user_id",
                        "created_at",
                        "last_activity_at",
                    )
                },
                "user": {
                    "type": "object",
                    "description": "the person who writes in this conversation",
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "email": nullable_str,
                    },
                },
            },
        },
        **_user_schemas(),
        "Message": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "role": {"enum": ["user", "assistant"]},
                "content": {"type": "string"},
                "source": {
                    "enum": ["text", "voice"],
                    "description": "typed in the channel's chat, or spoken in a voice call",
                },
                "interrupted": {
                    "type": "boolean",
                    "description": "a spoken answer the caller cut short (trimmed to what was "
                    "played when the cloud said)",
                },
                "created_at": {"type": "string"},
            },
        },
        "VoiceCall": {
            "type": "object",
            "description": "A voice call; never its secret. The 201 of a start adds what the app "
            "needs to join once (Alibaba: rtc_join_token), which is not kept.",
            "properties": {
                "id": {"type": "string"},
                "provider": {"enum": ["zego", "aliyun"]},
                "channel_id": {"type": "string"},
                "user_id": {"type": "string", "description": "the user's id on the channel"},
                "conversation_id": {
                    "type": "string",
                    "description": "the conversation the user's text chat on the channel uses",
                },
                "started_at": {"type": "string"},
                "expires_at": {"type": "string"},
                "status": {"enum": ["active", "ended"]},
                "ended_at": {"type": "string"},
                "end_reason": {"type": ["string", "null"]},
                "agent_instance_id": {"type": "string", "description": "ZEGO's agent instance"},
                "instance_id": {"type": "string", "description": "Alibaba's agent instance"},
                "rtc_channel_id": {"type": "string"},
                "rtc_user_id": {"type": "string"},
                "rtc_join_token": {
                    "type": "string",
                    "description": "in the start's answer only (Alibaba, GenerateAIAgentCall)",
                },
            },
            "required": ["id", "provider", "channel_id", "conversation_id", "expires_at"],
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "fields": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
        },
    }


def _user_schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    user = {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "email": nullable_str,
        "groups": {"type": "array", "items": {"type": "string"}},
        "auth_source": {
            "type": "string",
            "description": "who vouched for this person: auto (created on first contact), "
            "file, http, ldap (the directory), or a platform's name",
        },
        "directory_id": {
            "type": ["string", "null"],
            "description": "the directory's id of this person (file:, http: or ldap: and the "
            "entry's email, id or DN); null for people the directory does not know",
        },
        "blocked": {
            "type": "boolean",
            "description": "a blocked person is told so at most once a day; nothing they send "
            "reaches an agent",
        },
        "last_seen_at": nullable_str,
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
    }
    return {
        "User": {"type": "object", "properties": user},
        "UserDetail": {
            "type": "object",
            "properties": {
                **user,
                "identities": {"type": "array", "items": _ref("Identity")},
            },
        },
        "Identity": {
            "type": "object",
            "description": "An IM account (platform, tenant, the platform's id of the person) "
            "and the user it belongs to",
            "properties": {
                "id": {"type": "integer"},
                "platform": {"type": "string"},
                "tenant": {"type": "string"},
                "platform_user_id": {"type": "string"},
                "display_name": {"type": "string"},
                "user_id": {"type": "string"},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"},
            },
        },
        "LinkIdentity": {
            "type": "object",
            "properties": {"identity_id": {"type": "integer", "minimum": 1}},
            "required": ["identity_id"],
        },
    }


def _user_paths() -> dict[str, Any]:
    """The /api/v1/users routes: search, show, link, unlink, block, unblock."""
    detail = _json(_ref("UserDetail"))
    users = {"type": "object", "properties": {"users": {"type": "array", "items": _ref("User")}}}
    search = {
        "name": "search",
        "in": "query",
        "required": False,
        "description": "part of a name, an e-mail, a platform user id or display name "
        "(case-insensitive)",
        "schema": {"type": "string"},
    }
    identity = {
        "name": "identity_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
    }
    return {
        "/api/v1/users": {
            "get": _op("People, searched", _json(users), params=[search, LIMIT_PARAM])
        },
        "/api/v1/users/{id}": {
            "get": _op("One person with their identities", detail, params=[ID_PARAM])
        },
        "/api/v1/users/{id}/identities": {
            "post": _op(
                "Link an existing identity to this person (it leaves its previous user, whose "
                "conversations stay)",
                detail,
                params=[ID_PARAM],
                body=_ref("LinkIdentity"),
            )
        },
        "/api/v1/users/{id}/identities/{identity_id}": {
            "delete": _op(
                "Unlink an identity: it gets a new user of its own (the identity is answered); "
                "404 when it is not, or no longer, this person's",
                _json(_ref("Identity")),
                params=[ID_PARAM, identity],
            )
        },
        "/api/v1/users/{id}/block": {
            "post": _op(
                "Block a person: nothing they send reaches an agent", detail, params=[ID_PARAM]
            )
        },
        "/api/v1/users/{id}/unblock": {"post": _op("Unblock a person", detail, params=[ID_PARAM])},
    }


def _voice_call_paths() -> dict[str, Any]:
    """POST/GET /api/v1/voice/calls and GET/DELETE /api/v1/voice/calls/{id}."""
    call = _json(_ref("VoiceCall"))
    unavailable = {"503": _json(_ref("Error"), "voice calls are not available yet (starting)")}
    start = _op(
        "Start a voice call for a channel's user (the cloud's agent joins the user's RTC room)",
        _json(_ref("VoiceCall"), "the call, with what the app needs to join"),
        body=_ref("StartCall"),
        status="201",
        conflict="the channel has no voice section for this provider (voice_not_configured), "
        "or the call was ended while the cloud started it (conflict; its instance is stopped)",
    )
    start["responses"]["502"] = _json(_ref("Error"), "the cloud did not start the call")
    calls = {
        "type": "object",
        "properties": {"calls": {"type": "array", "items": _ref("VoiceCall")}},
    }
    channel = {"name": "channel", "in": "query", "required": False, "schema": {"type": "string"}}
    paths = {
        "/api/v1/voice/calls": {
            "get": _op("Active voice calls", _json(calls), params=[channel]),
            "post": start,
        },
        "/api/v1/voice/calls/{id}": {
            "get": _op("One voice call, active or ended", call, params=[ID_PARAM]),
            "delete": _op(
                "End a voice call: its secret stops working, the cloud's agent is stopped",
                call,
                params=[ID_PARAM],
            ),
        },
    }
    for operations in paths.values():
        for op in operations.values():
            op["responses"].update(unavailable)
    return paths


def _start_call_schemas() -> dict[str, Any]:
    schema = StartCall.model_json_schema(ref_template=REF)
    _secrets_not_empty(schema)
    return {**schema.pop("$defs", {}), "StartCall": schema}


def openapi_document() -> dict[str, Any]:
    """The route table in daemon/api.py must match it (a test checks)."""
    return _document(registry.platforms())


@lru_cache(maxsize=8)
def _document(platforms: tuple[Platform[Any], ...]) -> dict[str, Any]:
    # built once per set of registered platforms: a platform a test registers shows up
    channel = _json(_ref("Channel"))
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "channeld admin API", "version": "1"},
        "components": {
            "schemas": {**_schemas(platforms), **_start_call_schemas()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {**_op("This document", _json({"type": "object"})), "security": []}
            },
            "/api/v1/agents": {
                "get": _op(
                    "Configured agents, each with its circuit breaker's state",
                    _json(
                        {
                            "type": "object",
                            "required": ["agents"],
                            "properties": {"agents": {"type": "array", "items": _ref("Agent")}},
                        }
                    ),
                )
            },
            "/api/v1/channels": {
                "get": _op(
                    "All channels with live status",
                    _json(
                        {
                            "type": "object",
                            "properties": {"channels": {"type": "array", "items": _ref("Channel")}},
                        }
                    ),
                ),
                "post": _op(
                    "Create a channel (stored in the database)",
                    _json(_ref("Channel")),
                    body=_ref("ChannelSettings"),
                    status="201",
                    conflict="a channel with this id exists",
                ),
            },
            "/api/v1/channels/{id}": {
                "get": _op("One channel", channel, params=[ID_PARAM]),
                "patch": _op(
                    "Edit an API channel (409 for config-file channels)",
                    channel,
                    params=[ID_PARAM],
                    body=_ref("ChannelPatch"),
                    conflict="the channel is declared in the config file (managed_by_config), "
                    "or a secret must be given again (secret_required): an x-sends-secrets "
                    "setting changes, or the stored secret does not decrypt with the current key",
                ),
                "delete": _op(
                    "Delete an API channel",
                    {"description": "deleted"},
                    params=[ID_PARAM],
                    status="204",
                    conflict="the channel is declared in the config file",
                ),
            },
            **{
                f"/api/v1/channels/{{id}}/{action}": {
                    "post": _op(f"{action.capitalize()} a channel", channel, params=[ID_PARAM])
                }
                for action in ("enable", "disable", "restart")
            },
            "/api/v1/conversations": {
                "get": _op(
                    "Conversations, newest activity first",
                    _json(
                        {
                            "type": "object",
                            "properties": {
                                "conversations": {"type": "array", "items": _ref("Conversation")}
                            },
                        }
                    ),
                    params=[
                        {
                            "name": "channel",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "user",
                            "in": "query",
                            "required": False,
                            "description": "a person's id: the conversations opened for them "
                            "(their user_id). An identity linked to the person later keeps its "
                            "earlier conversations under the user it had then: they are not "
                            "listed here. 404 for an unknown user.",
                            "schema": {"type": "string"},
                        },
                        LIMIT_PARAM,
                    ],
                )
            },
            **_user_paths(),
            **_voice_call_paths(),
            "/api/v1/conversations/{id}/messages": {
                "get": _op(
                    "Messages of a conversation, oldest first",
                    _json(
                        {
                            "type": "object",
                            "properties": {"messages": {"type": "array", "items": _ref("Message")}},
                        }
                    ),
                    params=[ID_PARAM, LIMIT_PARAM],
                )
            },
        },
    }
    for operations in document["paths"].values():
        for method, op in operations.items():
            # the guard wants JSON or nothing in every change (daemon/admin_guard.py)
            if method not in SAFE:
                op["responses"]["415"] = UNSUPPORTED
    return document
