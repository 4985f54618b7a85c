"""Signals without data for every process of an installation ("the OCPI peers changed:
read them again"), so that what one process changed in the database, the others reload.

- Here at once, before :meth:`Topics.publish` returns; then
- on PostgreSQL: a NOTIFY on ``csms_topics``, which every other process LISTENs to; a
  process whose listening connection was lost fires every topic once it is back (it may
  have missed one);
- on SQLite: the node's delivery process, through its internal route.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import web

from .cluster import Link
from .db import Database, Tx

log = structlog.get_logger("csms.topics")

TOPICS_CHANNEL = "csms_topics"
MAX_TOPIC = 100
ROUTE = "/internal/v1/topics"

Handler = Callable[[], Awaitable[None]]


class Topics:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._db: Database | None = None
        self._forward: Callable[[], Link | None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._origin = secrets.token_hex(6)  # (a process does not hear its own NOTIFY)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Run ``handler`` whenever any process publishes ``topic``."""
        self._handlers.setdefault(topic, []).append(handler)

    def over_database(self, db: Database) -> None:
        """PostgreSQL: publish with NOTIFY (heard through :meth:`notified`)."""
        self._db = db

    def forward_to(self, link: Callable[[], Link | None]) -> None:
        """SQLite: also tell the node's delivery process (its :meth:`route`)."""
        self._forward = link

    async def publish(self, topic: str) -> None:
        if len(topic) > MAX_TOPIC or " " in topic:
            raise ValueError(f"not a topic: {topic[:MAX_TOPIC]!r}")
        await self._fire(topic)
        if self._db is not None:
            payload = f"{self._origin} {topic}"

            async def notify(tx: Tx) -> None:
                await tx.execute("SELECT pg_notify(?, ?)", (TOPICS_CHANNEL, payload))

            await self._db.write(notify)
            return
        link = self._forward() if self._forward is not None else None
        if link is not None:
            try:
                await link.request("POST", f"{ROUTE}?topic={quote(topic, safe='')}")
            except (aiohttp.ClientError, TimeoutError) as e:
                # (it reads everything again at its next start)
                log.warning("delivery process not told", topic=topic, error=str(e))

    def notified(self, payload: str) -> None:
        """A NOTIFY brought ``payload`` ("<origin> <topic>")."""
        origin, _, topic = payload.partition(" ")
        if origin != self._origin and topic in self._handlers:
            self._spawn(topic)

    def refire(self) -> None:
        """Every topic once (notifications may have been missed)."""
        for topic in self._handlers:
            self._spawn(topic)

    def _spawn(self, topic: str) -> None:
        task = asyncio.create_task(self._fire(topic), name=f"topic-{topic}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, topic: str) -> None:
        for handler in self._handlers.get(topic, []):
            try:
                await handler()
            except Exception:
                log.exception("topic handler failed", topic=topic)

    def route(self) -> web.RouteDef:
        """The delivery process's end (the caller checks the secret)."""

        async def handle(request: web.Request) -> web.Response:
            topic = request.query.get("topic", "")
            if not topic or len(topic) > MAX_TOPIC:
                return web.json_response({"status": "error", "error": "bad_topic"}, status=400)
            await self._fire(topic)
            return web.json_response({"status": "ok"})

        return web.post(ROUTE, handle)
