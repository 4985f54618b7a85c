"""A lean websocket client for OCPP-J: RFC 6455 on an asyncio Protocol.

One object per connection and no task of its own: the handshake and every frame are handled
in ``data_received``; text messages are handed to the owner's ``on_message`` callback, and
the connection's end to ``on_lost``. Client frames are masked (the mask is applied by
websockets' C helper when it is available), no extension is negotiated (no compression),
pings are answered with pongs and a close frame with a close frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
from collections.abc import Callable

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        if n == 0:
            return b""
        repeated = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_getrandbits = random.getrandbits


class HandshakeFailed(ConnectionError):
    """The server did not switch protocols (``status`` is its HTTP status, 0 if unreadable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    mask = _getrandbits(32).to_bytes(4, "little")
    return header + mask + apply_mask(payload, mask)


class WsProtocol(asyncio.Protocol):
    """One websocket connection. ``on_message(text)`` gets each text message, ``on_lost(exc)``
    is called once when the connection ends (after the handshake succeeded)."""

    __slots__ = (
        "_buf",
        "_frag",
        "_key",
        "_open",
        "_request",
        "closed",
        "handshake",
        "on_lost",
        "on_message",
        "transport",
    )

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        subprotocol: str,
        on_message: Callable[[str], None],
        on_lost: Callable[[Exception | None], None],
        authorization: str | None = None,
    ) -> None:
        self._buf = bytearray()
        self._frag: bytearray | None = None
        self._key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key.decode()}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {subprotocol}",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._open = False  # the handshake succeeded: on_lost will be called

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self.handshake.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    self._fail_handshake(0, "handshake answer too long")
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            if not self._check_handshake(head):
                return
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during handshake"))
        if self._open:
            self._open = False
            self.on_lost(exc)

    # ------------------------------------------------------------------ handshake

    def _check_handshake(self, head: str) -> bool:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status != 101:
            self._fail_handshake(status, f"handshake refused: {lines[0]}")
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            self._fail_handshake(status, "handshake: wrong Sec-WebSocket-Accept")
            return False
        if headers.get("sec-websocket-extensions"):
            self._fail_handshake(status, "handshake: the server negotiated an extension")
            return False
        if self.handshake.done():  # timed out meanwhile
            return False
        self._open = True
        self.handshake.set_result(None)
        return True

    def _fail_handshake(self, status: int, message: str) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(HandshakeFailed(status, message))
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ frames

    def _frames(self) -> None:
        buf = self._buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            mask = None
            if b1 & 0x80:  # servers must not mask, but be tolerant
                if len(buf) < pos + 4:
                    return
                mask = bytes(buf[pos : pos + 4])
                pos += 4
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            if mask is not None:
                payload = apply_mask(payload, mask)
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_TEXT or opcode == OP_BINARY:
                if fin:
                    self._deliver(payload)
                else:
                    self._frag = bytearray(payload)
            elif opcode == OP_CONT:
                if self._frag is not None:
                    self._frag += payload
                    if fin:
                        data, self._frag = bytes(self._frag), None
                        self._deliver(data)
            elif opcode == OP_PING:
                self._write(encode_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self._write(encode_frame(payload[:2], OP_CLOSE))
                if self.transport is not None:
                    self.transport.close()
                return

    def _deliver(self, payload: bytes) -> None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return
        self.on_message(text)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # ------------------------------------------------------------------ ours

    def send_text(self, text: str) -> None:
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection closed")
        self.transport.write(encode_frame(text.encode()))

    def close(self, code: int = 1000) -> None:
        """A polite close: our close frame, then the socket."""
        if not self.closed and self.transport is not None:
            self._write(encode_frame(code.to_bytes(2, "big"), OP_CLOSE))
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (TCP reset), as a network failure would."""
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: Callable[[str], None],
    on_lost: Callable[[Exception | None], None],
    *,
    subprotocol: str = "ocpp1.6",
    timeout: float = 30.0,
    authorization: str | None = None,
) -> WsProtocol:
    """Open a websocket; raises HandshakeFailed, OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    proto = WsProtocol(host, port, path, subprotocol, on_message, on_lost, authorization)
    await asyncio.wait_for(loop.create_connection(lambda: proto, host, port), timeout)
    timer = loop.call_later(timeout, _expire, proto)
    try:
        await proto.handshake
    finally:
        timer.cancel()
    return proto


def _expire(proto: WsProtocol) -> None:
    if not proto.handshake.done():
        proto.handshake.set_exception(TimeoutError("websocket handshake timed out"))
        if proto.transport is not None:
            proto.transport.abort()
