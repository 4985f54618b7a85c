"""The simulated station's file transfers, as a real charger does them.

- UpdateFirmware: the image is downloaded with HTTP(S) ``GET`` from ``location``; an attempt
  that fails (connection, status >= 300, larger than :data:`MAX_IMAGE_BYTES`) is repeated
  ``retries`` times, ``retryInterval`` seconds apart. The version installed is read from the
  image's first line ``simfw-version: <version>`` (else ``Behaviour.firmware_version_after``,
  else the version stays).
- GetDiagnostics: a generated text file (the station's identity, configuration and
  counters) is uploaded with HTTP(S) ``PUT`` to ``location``, its name in
  ``Content-Disposition``; retried likewise. ``ftp://`` locations are not supported (the
  upload fails: UploadFailed), as on chargers without an FTP client.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import aiohttp

from charger_sim.timeutil import iso

if TYPE_CHECKING:
    from charger_sim.station import Station

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_RETRY_WAIT = 3600.0
TRANSFER_TIMEOUT = 300.0
_VERSION = re.compile(rb"^simfw-version:\s*([^\r\n]{1,50})", re.IGNORECASE)


def version_in(image: bytes) -> str | None:
    """The firmware version an image declares on its first line, if any."""
    m = _VERSION.match(image[:200])
    return m.group(1).decode("utf-8", "replace").strip() or None if m else None


def _ssl(station: Station, url: str) -> Any:
    if not url.startswith("https://"):
        return None
    return station.security.ssl_context(url.replace("https://", "wss://", 1))


def _attempts(retries: int | None) -> int:
    return 1 + max(0, min(int(retries or 0), 20))


def _wait(interval: int | None) -> float:
    return max(0.0, min(float(interval or 0), MAX_RETRY_WAIT))


async def download(
    station: Station, url: str, retries: int | None, interval: int | None
) -> bytes | None:
    """The image at ``url`` (None when every attempt failed)."""
    if not url.startswith(("http://", "https://")):
        station.log.warning("firmware download: unsupported location", location=url[:80])
        return None
    for attempt in range(_attempts(retries)):
        if attempt:
            await asyncio.sleep(_wait(interval))
        try:
            timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url, ssl=_ssl(station, url)) as resp:
                    if resp.status >= 300:
                        raise ValueError(f"download answered {resp.status}")
                    body = bytearray()
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        body += chunk
                        if len(body) > MAX_IMAGE_BYTES:
                            raise ValueError("firmware image too large")
                    return bytes(body)
        except Exception as exc:  # any failure of an attempt: the next one, or DownloadFailed
            station.log.warning("firmware download failed", attempt=attempt + 1, error=repr(exc))
    return None


def diagnostics_text(station: Station) -> bytes:
    lines = [
        f"# diagnostics of {station.id}, made {iso()}\n",
        f"vendor={station.vendor} model={station.model}\n",
        f"firmware={station.firmware_version}\n",
        f"connectors={station.number_of_connectors}\n",
    ]
    for n, conn in sorted(station.connectors.items()):
        lines.append(f"connector {n}: {conn.status} {conn.error_code}\n")
    return "".join(lines).encode()


async def upload(
    station: Station, url: str, name: str, body: bytes, retries: int | None, interval: int | None
) -> bool:
    """Upload ``body`` as ``name`` to ``url``; whether an attempt succeeded."""
    if not url.startswith(("http://", "https://")):
        station.log.warning("diagnostics upload: unsupported location", location=url[:80])
        return False
    headers = {
        "Content-Type": "text/plain",
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    for attempt in range(_attempts(retries)):
        if attempt:
            await asyncio.sleep(_wait(interval))
        try:
            timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.put(
                    url, data=body, headers=headers, ssl=_ssl(station, url)
                ) as resp:
                    if resp.status >= 300:
                        raise ValueError(f"upload answered {resp.status}")
                    return True
        except Exception as exc:  # any failure of an attempt: the next one, or UploadFailed
            station.log.warning("diagnostics upload failed", attempt=attempt + 1, error=repr(exc))
    return False
