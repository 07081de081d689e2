"""Reads one user's profile with the official lark-oapi 1.7.5 `Client` from a Feishu emulator;
test helper.

Started by tests/test_feishu_profile.py with the interpreter of the separate lark venv. Prints
one line: `PREFIX` and JSON {"code", "msg", "email", "enterprise_email", "mobile", "employee_no"}.
"""

from __future__ import annotations

import argparse
import json
import sys

import lark_oapi as lark  # type: ignore[import-not-found]  # lives in the lark venv only
from lark_oapi.api.contact.v3 import GetUserRequest  # type: ignore[import-not-found]

PREFIX = "@@lark-contact "


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--app-secret", required=True)
    parser.add_argument("--open-id", required=True)
    args = parser.parse_args()
    client = (
        lark.Client.builder()
        .app_id(args.app_id)
        .app_secret(args.app_secret)
        .domain(args.domain)
        .timeout(5)
        .log_level(lark.LogLevel.ERROR)
        .build()
    )
    request = GetUserRequest.builder().user_id(args.open_id).user_id_type("open_id").build()
    response = client.contact.v3.user.get(request)
    user = response.data.user if response.success() and response.data else None
    record = {
        "code": response.code,
        "msg": response.msg,
        **{
            key: getattr(user, key, None)
            for key in ("email", "enterprise_email", "mobile", "employee_no")
        },
    }
    sys.stdout.write(PREFIX + json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
