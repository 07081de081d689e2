"""DingTalk: Stream-mode connection, OpenAPI client, AI-card replies and a local emulator."""
