"""Names that are used where vulture cannot see it; `make lint` reads this file with the code.

vulture reports code nothing reads. It matches names, not objects: an attribute read here, on
any object, counts as a use of every definition with that name. Each entry says who uses it.
Pydantic validators are exempt by decorator in pyproject.toml (`[tool.vulture]`). What only the
tests read is dead unless it is their way in to real behaviour (a test double's controls, a
client's token cache): a counter that repeats a metric goes, and the tests read the metric.
Nothing imports this module.
"""

from types import SimpleNamespace

_ = SimpleNamespace()  # stands for any object

_frameworks = (
    _.model_config,  # pydantic reads each model's settings
    _.impl,  # SQLAlchemy TypeDecorator (storage/models.py): the column type it wraps
    _.cache_ok,  # ... and whether its statements may be cached
    _.process_bind_param,  # ... called on each value written
    _.process_result_value,  # ... called on each value read
    _.isolation_level,  # the sqlite3 driver's connection setting (storage/engine.py)
    _.revision,  # Alembic reads each migration module's revision chain ...
    _.down_revision,
    _.branch_labels,
    _.depends_on,
    _.upgrade,  # ... and calls its upgrade and downgrade
    _.downgrade,
    _.exc_type,  # the context-manager protocol passes these to __exit__ and __aexit__
    _.tb,
)

_by_name = (
    # the emulators' control API serialises these records whole (dataclasses.asdict)
    _.via,  # ChatItem: how a bot message reached the chat
    _.hits,  # Fault: how often it answered
    _.msg_id,  # the DingTalk UserMessage's msgId
    _.ack_code,  # the Feishu Delivery's ack
    # tools/bench/load.py reads these Reply timings by name
    _.ack_at,
    _.llm_request_at,
    # tools/bench/baseline_bot.py aims dingtalk-stream 0.24.3 at the emulator by setting them
    _.OPEN_CONNECTION_API,
    _.DINGTALK_OPENAPI_ENDPOINT,
)

_test_doubles = (
    # tools/fake_llm.py is the tests' OpenAI-compatible server; the tests script it
    _.script_error,
    _.script_reply,
    _.script_stall,
    _.script_stall_mid_stream,
    _.script_drop,
    _.wait_for_requests,
    _.wait_idle,
    _.QPS_LIMIT_BODY,  # a DingTalk fault body the emulator offers; tests inject it
    _.unregister,  # channels/registry.py: tests take away the dummy platform they registered
    _.deny_contact,  # FeishuEmulatorThread: tests play an app without the contacts permission
    _.add_contact_user,  # ... and register the people its contacts API knows
)

_test_entry_points = (
    # product code that only tests call, each the direct way in to behaviour they check
    _.access_token,  # DingTalkApi: its token cache (FeishuApi.tenant_token is the product twin)
    _.append_message,  # Store: seeds conversation history (answers store turns in reply_*)
    _.identity_owner,  # Store: who holds an IM account (tests check links and unlinks with it)
)

_import_linter = (
    # pyproject.toml's [tool.importlinter] contract_types names these tools/lint_platforms.py
    # contracts; lint-imports builds them
    _.PlatformsNotImportedBy,
    _.PlatformsIndependent,
    _.PlatformsDoNotImport,
    _.EmulatorsApart,
)

_emulator_records = (
    _.repeated,  # WuKongIM emulator: EventRecord.repeated, read by the control plane and tests
    # Easemob emulator observations, read by tests and in the control plane's JSON
    _.by_default,  # PreSendCall: the console's default policy decided, not our answer
    _.presend_in_time,  # UserMessage: the pre-send verdict came within the wait time
    _.presend_after,  # UserMessage: how long the pre-send verdict took
    _.postsend_ok,  # UserMessage: the post-send callback was answered 200
    _.granted,  # TokenRequest: the token endpoint granted this request
)
