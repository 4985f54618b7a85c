"""Receiving a file a station (or the operator) sends over HTTP: the body streamed to disk,
raw (``PUT``/``POST`` with the file as the body) or as the first file part of a
``multipart/form-data`` body, never more than a limit, written under a temporary name and
renamed once complete. Shared by GetLog's uploads (csms.security), GetDiagnostics' uploads
(csms.diagnostics) and firmware files (csms.firmware)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

UPLOAD_CHUNK = 1 << 16
_DISPOSITION_NAME = re.compile(r'filename="?([^";]+)"?')


class UploadTooLarge(Exception):
    """The body passed the limit (the partial file is gone)."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit
        self.size = size


class NoFile(Exception):
    """A multipart body without a file part."""


@dataclass(frozen=True)
class Received:
    """What was written: the final path, its size and SHA-256, the name the sender gave."""

    path: Path
    size: int
    sha256: str
    original_name: str | None


async def open_body(
    request: web.Request,
) -> tuple[str | None, AsyncIterator[bytes], Any]:
    """The sender's file name (if any), the chunks of the file, and the multipart part
    (or None) of ``request``. Raises NoFile for a multipart body without a file."""
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("multipart/form-data"):
        multipart = await request.multipart()
        part = None
        for _ in range(32):  # (bounded: a few form fields before the file)
            candidate = await multipart.next()
            if candidate is None:
                break
            if getattr(candidate, "filename", None) is not None:
                part = candidate
                break
        if part is None:
            raise NoFile("no file in the multipart body")
        return part.filename, part_chunks(part), part
    m = _DISPOSITION_NAME.search(request.headers.get("Content-Disposition", ""))
    return (m.group(1) if m else None), request.content.iter_chunked(UPLOAD_CHUNK), None


async def part_chunks(part: Any) -> AsyncIterator[bytes]:
    """The content of a multipart body's part, chunk by chunk."""
    while True:
        chunk = await part.read_chunk(UPLOAD_CHUNK)
        if not chunk:
            return
        yield chunk


async def receive_file(request: web.Request, directory: Path, name: str, limit: int) -> Received:
    """Stream the file of ``request`` to ``directory/name`` (which must not contain a path;
    the caller makes it safe). At most ``limit`` bytes: beyond, UploadTooLarge and nothing
    is kept. ``directory`` is created (0700) when missing."""
    if request.content_length is not None and request.content_length > limit:
        raise UploadTooLarge(limit, request.content_length)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    original, reader, _ = await open_body(request)
    return await write_chunks(reader, directory, name, limit, original)


async def write_chunks(
    reader: AsyncIterator[bytes], directory: Path, name: str, limit: int, original: str | None
) -> Received:
    final = directory / name
    partial = directory / f".{name}.{secrets.token_hex(4)}.part"
    size = 0
    digest = hashlib.sha256()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in reader:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit, size)
                digest.update(chunk)
                f.write(chunk)
        os.replace(partial, final)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return Received(final, size, digest.hexdigest(), original)


def download_response(path: Path, name: str | None = None) -> web.FileResponse:
    """A stored file as an attachment (never rendered by a browser)."""
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name or path.name}"',
            "X-Content-Type-Options": "nosniff",
        },
    )
