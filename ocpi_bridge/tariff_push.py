"""Our tariffs pushed to the peers (issue 19): the I/O shell of :mod:`ocpi_bridge.tariff_delivery`.

    admin API / config ──(ocpi.tariffs topic)──▶ reconcile: our tariffs, the peers, what each
    acknowledged ──▶ tariff_delivery.owed (pure) ──▶ TariffQueue (pure: per peer, in flight,
    backoff) ──▶ PUT / DELETE {peer's tariffs Receiver}/{cc}/{pid}/{id} ──▶ acknowledged

It runs where the pusher runs (the delivery role). A tariff changed in another process (the
admin API is in the web/OCPP process) reaches it through csms's topics (TARIFFS_TOPIC); a
peer registered, renewed, resumed, or its policy changed, through the bridge's peers topic
(the bridge calls :meth:`TariffPusher.reconcile`). Every reconciliation compares what each
peer acknowledged (ocpi_push_acks, kind ``tariff``) with the current set, so nothing owed is
lost across a restart, and nothing acknowledged is pushed again.

Before the first PUT of a tariff to a peer, an ``UNCONFIRMED`` acknowledgement is written:
were the process to die before the answer is stored, the peer may hold the tariff, and if
the tariff is deleted meanwhile a DELETE is still owed. A DELETE answered HTTP 404 (the peer
has no such tariff) is as good as acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog

from csms.ports import Tx as JobDb
from csms.ports import to_db

from .client import OcpiCallFailed
from .service import BackgroundService
from .store import Peer
from .tariff_delivery import (
    ACK_KIND,
    DELETE,
    PER_PEER,
    PUT,
    UNCONFIRMED,
    Job,
    TariffFacts,
    TariffPeer,
    TariffQueue,
    gets_pushes,
    owed,
    tariff_state,
)
from .transport import join_url
from .versions import outgoing

if TYPE_CHECKING:
    from .context import BridgeContext

log = structlog.get_logger("ocpi.tariffs")

# what every process hears when our tariffs change (csms.topics)
TARIFFS_TOPIC = "ocpi.tariffs"


def receiver_url(peer: Peer) -> str | None:
    """The peer's tariffs Receiver: its endpoint with role RECEIVER (2.2, 2.2.1); a 2.1.1
    peer lists its modules without roles, and an eMSP's tariffs module is its Receiver."""
    url = peer.endpoint("tariffs", "RECEIVER")
    if url is None and peer.version == "2.1.1":
        url = peer.endpoint("tariffs")
    return url


class TariffPusher(BackgroundService):
    def __init__(
        self,
        bridge: BridgeContext,
        metrics: Any = None,
        observe: Callable[[int, bool, datetime, str | None], None] | None = None,
    ) -> None:
        """``metrics``: the pusher's PushMetrics (its counters get kinds ``tariff_put``,
        ``tariff_delete``); ``observe``: each push's outcome per peer (the push alerts)."""
        super().__init__(bridge.clock, bridge.csms.bus)
        self.bridge = bridge
        s = bridge.settings
        self.queue = TariffQueue(
            per_peer=min(PER_PEER, s.push_concurrency),
            backoff_max=timedelta(seconds=s.retry_max_seconds),
        )
        self.metrics = metrics
        self.observe = observe
        # our tariffs, by upper-case id: their facts and OCPI 2.2.1 objects
        self._tariffs: dict[str, tuple[TariffFacts, dict[str, Any]]] = {}
        self._order: list[TariffFacts] = []
        # what each peer acknowledged: (peer id, upper-case tariff id) -> (tariff id, state)
        self._acks: dict[tuple[int, str], tuple[str, str]] = {}
        self._peers: dict[int, Peer] = {}
        self._facts: list[TariffPeer] = []
        self._loaded = False
        self._lock = asyncio.Lock()
        bridge.csms.topics.subscribe(TARIFFS_TOPIC, self._changed)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        rows = await self.bridge.csms.db.read(
            "SELECT peer_id, object_id, state FROM ocpi_push_acks WHERE kind = ?", (ACK_KIND,)
        )
        self._acks = {
            (r["peer_id"], r["object_id"].upper()): (r["object_id"], r["state"]) for r in rows
        }
        self._loaded = True
        await self.reconcile()
        self._run((self._dispatch(), "ocpi-tariff-push"))

    async def _changed(self) -> None:
        if self.running:
            await self.reconcile()

    # ------------------------------------------------------------------ what is owed

    async def reconcile(self) -> None:
        """Read our tariffs and the peers again, and push whatever each peer lacks or holds
        that it should not. Cheap (a few reads, then per peer a pass over the tariffs): called
        at start-up, when a tariff changes, and when the peers or their policies change."""
        if not self._loaded:
            return  # (not started: start() does this)
        async with self._lock:
            peers = [p for p in await self.bridge.store.peers() if p.status == "registered"]
            tariffs: dict[str, tuple[TariffFacts, dict[str, Any]]] = {}
            order: list[TariffFacts] = []
            for row in await self.bridge.store.tariffs():
                try:
                    obj = self.bridge.tariff_object(row)
                except ValueError as e:
                    log.warning("tariff not pushed: invalid", tariff_id=row["id"], error=str(e))
                    continue
                facts = TariffFacts.of(obj)
                tariffs[facts.id.upper()] = (facts, obj)
                order.append(facts)
            self._tariffs, self._order = tariffs, order
            self._peers = {p.id: p for p in peers}
            self._facts = [
                TariffPeer(
                    p.id,
                    p.policy,
                    p.version,
                    gets_pushes(p.policy, p.active, receiver_url(p)),
                )
                for p in peers
            ]
            self._recompute()

    def _recompute(self) -> None:
        """What is owed, from what is known here (no I/O)."""
        self.queue.update(owed(self._facts, self._order, self._acks), self.clock.now())
        self._wake.set()

    # ------------------------------------------------------------------ pushing

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            try:
                for job in self.queue.ready(self.clock.now()):
                    self._spawn(self._send(job), f"tariff-{job.method.lower()}")
            except Exception:
                log.exception("tariff push dispatch failed")
            await self._sleep(self.queue.next_wakeup())

    async def _send(self, job: Job) -> None:
        started = time.perf_counter()
        ok, error, sent = False, None, False
        peer = self._peers.get(job.peer_id)
        try:
            url = receiver_url(peer) if peer is not None else None
            if peer is None or url is None:
                ok = True  # gone meanwhile: nothing to deliver (what is owed is made again)
                return
            s = self.bridge.settings
            # (an id may hold any printable ASCII: a space, "?", "#" are escaped in the path)
            target = join_url(url, s.country_code, s.party_id, quote(job.tariff_id, safe=""))
            body: dict[str, Any] | None = None
            state: str | None = None
            if job.method == PUT:
                current = self._tariffs.get(job.tariff_id.upper())
                if current is None:
                    ok = True  # deleted meanwhile: a DELETE is owed instead, if anything
                    return
                facts, obj = current
                body = outgoing("tariff", obj, peer.version)
                state = tariff_state(facts, peer.version)
                if job.key not in self._acks:
                    # the peer may hold it from now on (a crash before the answer is stored)
                    await self._store(job.peer_id, facts.id, UNCONFIRMED)
            sent = True
            reply = await self.bridge.client.request(
                job.method,
                target,
                peer.token_out,
                base64_token=peer.token_out_base64,
                body=body,
                module="tariffs",
                to_party=peer.primary_party,
                timeout=self.bridge.settings.push_timeout,
            )
            ok = reply.ok or (job.method == DELETE and reply.http_status == 404)
            if not ok:
                error = reply.describe()
            elif state is not None:
                await self._store(job.peer_id, job.tariff_id, state)
            else:
                await self._store(job.peer_id, job.tariff_id, None)
        except OcpiCallFailed as e:
            error = str(e)
        except asyncio.CancelledError:
            sent = False  # (stopping: not an outcome of the peer's)
            raise
        except Exception as e:
            log.exception("tariff push failed", tariff_id=job.tariff_id, peer_id=job.peer_id)
            error = f"{type(e).__name__}: {e}"
        finally:
            now = self.clock.now()
            self.queue.done(job, ok, now, error)
            if sent:
                self._outcome(job, ok, now, error, time.perf_counter() - started)
            self._recompute()

    def _outcome(
        self, job: Job, ok: bool, now: datetime, error: str | None, seconds: float
    ) -> None:
        kind = f"tariff_{job.method.lower()}"
        if self.metrics is not None:
            self.metrics.pushes.labels(kind, "ok" if ok else "failed").inc()
            self.metrics.seconds.labels(kind).observe(seconds)
        if self.observe is not None:
            self.observe(job.peer_id, ok, now, error)
        self.bridge.traffic.push(job.peer_id, "tariff", ok, error)
        (log.info if ok else log.warning)(
            "push",
            peer_id=job.peer_id,
            push=f"{job.method} tariff",
            object=job.tariff_id,
            ms=round(seconds * 1000, 1),
            outcome="delivered" if ok else "failed",
            error=error,
        )

    async def _store(self, peer_id: int, tariff_id: str, state: str | None) -> None:
        """Keep what a peer holds of a tariff (None: nothing): here at once, then in the
        database. A failed write is logged: the worst it does is a push again after a
        restart; except for the UNCONFIRMED mark, which must be stored before the PUT."""
        key = (peer_id, tariff_id.upper())
        if state is None:
            self._acks.pop(key, None)
        else:
            self._acks[key] = (tariff_id, state)
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                "DELETE FROM ocpi_push_acks WHERE peer_id = ? AND kind = ? "
                "AND upper(object_id) = ?",
                (peer_id, ACK_KIND, key[1]),
            )
            if state is not None:
                await db.execute(
                    """INSERT INTO ocpi_push_acks (peer_id, kind, object_id, state,
                           periods_sent, location_url, acked_at)
                       VALUES (?, ?, ?, ?, 0, NULL, ?)""",
                    (peer_id, ACK_KIND, tariff_id, state, now),
                )

        try:
            await self.bridge.csms.db.write(job)
        except Exception as e:
            if state == UNCONFIRMED:
                self._acks.pop(key, None)
                raise
            log.warning("tariff acknowledgement not stored", peer_id=peer_id, error=str(e))

    # ------------------------------------------------------------------ for the API

    def pending(self) -> list[Job]:
        """The tariff pushes owed and not acknowledged yet, per peer."""
        return self.queue.pending()

    def acknowledged(self, peer_id: int) -> dict[str, str]:
        """What a peer holds of our tariffs, as far as we know: tariff id -> state."""
        return {tid: state for (p, _), (tid, state) in self._acks.items() if p == peer_id}
