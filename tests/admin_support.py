"""Raw HTTP/1.1 to the admin listener: the bytes a well-behaved client library would refuse to send
(non-ASCII headers, foreign Host values, odd media types), and the answer parsed by hand."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Header = tuple[bytes | str, bytes | str]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names; the last value of a repeated header
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        """The `error.code` of a JSON error answer (fails the test on anything else)."""
        assert self.content_type == "application/json", (self.status, self.headers, self.body)
        code = self.json()["error"]["code"]
        assert isinstance(code, str)
        return code


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()  # non-ASCII text: UTF-8


def build_request(
    method: str,
    path: str,
    port: int,
    headers: Sequence[Header] = (),
    body: bytes | None = None,
    *,
    host: bytes | str | None = None,
) -> bytes:
    """One request with `Connection: close`; Host is 127.0.0.1:port unless given (b"" omits it)."""
    lines = [f"{method} {path} HTTP/1.1".encode()]
    host_value = _bytes(host) if host is not None else f"127.0.0.1:{port}".encode()
    if host_value:
        lines.append(b"Host: " + host_value)
    lines += [_bytes(name) + b": " + _bytes(value) for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def raw_http(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Sends the bytes to 127.0.0.1:port and reads the answer to the end."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    return parse_response(data)


def raw_http_sync(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """raw_http for synchronous tests (the fuzzers drive a daemon running on another thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse_response(b"".join(chunks))
