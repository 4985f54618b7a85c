"""What csms's processes say to each other: an OCPP node (websockets, API, web, OCPI
endpoints) and its delivery process (OCPI pushes, R7 timers, notices).

    OCPP node ──commit──▶ database ──relay (woken through a pipe)──▶ delivery process
        ▲                                                              │
        └──────── POST /internal/v1/commands (bearer secret) ◀──────────┘ (TriggerMessage)
    OCPP node ──GET/POST <delivery>/internal/... (bearer secret)──▶ delivery process

- Events cross through the database (csms.outbox); a byte on a pipe wakes the delivery
  process's relay after each commit, and it also looks every ``RELAY_POLL`` seconds.
- A command for a station goes to the node that holds its websocket, over loopback HTTP,
  authenticated by a secret the supervisor makes for each start (never written anywhere,
  handed to its child in the environment).
- The delivery process serves its own metrics, health and the extensions' internal routes
  on a loopback port it tells the supervisor through a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from .commands import (
    CommandError,
    CommandPort,
    CommandTimeout,
    InvalidCommand,
    StationOffline,
    StationRejected,
    UnknownAction,
)
from .connection import StationCallError
from .http import json_response
from .tls import link_context

log = structlog.get_logger("csms.cluster")

ROLES = ("all", "ocpp", "delivery")
# what a supervisor hands its delivery process (not CSMS_*: those are configuration)
SECRET_ENV = "_CSMS_DELIVERY_SECRET"
NODE_URL_ENV = "_CSMS_DELIVERY_NODE_URL"
WAKE_FD_ENV = "_CSMS_DELIVERY_WAKE_FD"
READY_FD_ENV = "_CSMS_DELIVERY_READY_FD"
# the delivery process's relay looks for events at least this often (the pipe wakes it
# at once; this covers a lost byte and a writer in another process without a pipe)
RELAY_POLL = 1.0
# more than a station may take to answer (the node's own timeout answers first)
COMMAND_MARGIN = 10.0

_ERRORS: dict[str, type[CommandError]] = {
    cls.code: cls
    for cls in (CommandError, UnknownAction, InvalidCommand, StationOffline, CommandTimeout)
}


def loopback_host(host: str) -> str:
    """How this machine's other processes write the host of a server listening on
    ``host`` in a URL (any address: loopback; IPv6 in brackets)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class Link:
    """How to reach the other process: its base URL and the shared secret."""

    url: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    async def request(self, method: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        """One internal request: (HTTP status, body). Raises aiohttp.ClientError or
        TimeoutError when the other process cannot be reached."""
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                self.url + path,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                ssl=link_context(self.url),
            ) as resp,
        ):
            return resp.status, await resp.read()


def authorized(request: web.Request, secret: str) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {secret}".encode())


def refuse(request: web.Request) -> web.Response:
    log.warning(
        "internal request refused: no or wrong secret", path=request.path, remote=request.remote
    )
    return json_response({"status": "error", "error": "unauthorized"}, status=401)


# ---------------------------------------------------------------------------- commands


def command_routes(commands: CommandPort, secrets: Callable[[], list[str]]) -> list[web.RouteDef]:
    """The node's end of a command sent by another process: its delivery process (with the
    supervisor's secret) or, on PostgreSQL, any process of the cluster (with the cluster's).
    It runs here when the station's websocket is here; otherwise it is routed to the node
    that holds it, unless it was routed here already (``routed``: never twice)."""

    async def handle(request: web.Request) -> web.Response:
        if not any(authorized(request, secret) for secret in secrets()):
            return refuse(request)
        try:
            body = await request.json()
            station_id, action, payload = body["station_id"], body["action"], body["payload"]
            timeout, origin = body.get("timeout"), str(body.get("origin") or "internal")
            routed = body.get("routed") is True
            if not (isinstance(station_id, str) and isinstance(action, str)):
                raise TypeError("station_id and action must be text")
            if not isinstance(payload, dict):
                raise TypeError("payload must be an object")
            if timeout is not None and not isinstance(timeout, int | float):
                raise TypeError("timeout must be a number")
        except (ValueError, KeyError, TypeError) as e:
            return json_response(
                {"status": "error", "error": "bad_request", "message": str(e)}, status=400
            )
        try:
            answer = await commands.send(
                station_id, action, payload, timeout=timeout, origin=origin, route=not routed
            )
        except StationRejected as e:
            err = e.error
            return json_response(
                {
                    "error": e.code,
                    "message": str(e),
                    "call_error": [err.code, err.description, err.details],
                }
            )
        except CommandError as e:
            return json_response({"error": e.code, "message": str(e)})
        return json_response({"answer": answer})

    return [web.post("/internal/v1/commands", handle)]


class RemoteCommands:
    """The command port as another process sees it: each command goes to the node."""

    def __init__(self, link: Link, default_timeout: float, routed: bool = False) -> None:
        self.link = link
        self.default_timeout = default_timeout
        self.routed = routed  # (to the node that holds the station: it must not route again)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        origin: str = "internal",
        on_answer: Callable[[Any], None] | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        wait = (timeout if timeout is not None else self.default_timeout) + COMMAND_MARGIN
        body = {
            "station_id": station_id,
            "action": action,
            "payload": payload,
            "timeout": timeout,
            "origin": origin,
            "routed": self.routed,
        }
        try:
            async with self._session.post(
                f"{self.link.url}/internal/v1/commands",
                json=body,
                headers=self.link.headers,
                timeout=aiohttp.ClientTimeout(total=wait),
                ssl=link_context(self.link.url),
            ) as resp:
                if resp.status != 200:
                    raise CommandError(f"the OCPP node refused the command (HTTP {resp.status})")
                result = await resp.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as e:
            raise CommandError(f"the OCPP node could not be reached: {e}") from None
        if "answer" in result:
            if on_answer is not None:
                on_answer(result["answer"])
            return result["answer"]
        if "call_error" in result:
            raise StationRejected(StationCallError(*result["call_error"]))
        raise _ERRORS.get(result.get("error", ""), CommandError)(result.get("message", ""))


# ---------------------------------------------------------------------------- wake-ups


class WakeWriter:
    """The node's end of the wake-up pipe: a byte after each commit (never blocks: when the
    pipe is full, the reader has a wake-up pending anyway)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def __call__(self) -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self.fd, b"w")


def read_wakeups(fd: int, wake: Callable[[], None], gone: Callable[[], None]) -> Callable[[], None]:
    """Call ``wake`` whenever bytes come on ``fd`` (the delivery process's end), and
    ``gone`` when the pipe closes: the node that started this process is gone (even by
    ``kill -9``), and its next start brings a delivery process of its own. Returns what
    stops listening."""
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            gone()
            return
        wake()

    loop.add_reader(fd, readable)
    return lambda: loop.remove_reader(fd)
