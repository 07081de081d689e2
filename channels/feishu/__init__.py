"""Feishu / Lark: long-connection client, OpenAPI and CardKit cards, emulator."""
