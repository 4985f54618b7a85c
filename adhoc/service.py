"""Ad hoc payments, the shell: the driver's requests, the provider, the station, the worker.

The decisions are :func:`adhoc.core.next_step`'s; this module gathers the facts it needs
(the payment's row, the provider's answer, csms's transactions), does what it says, and
records each step with a compare-and-set on the payment's state before or after acting:

- a step that calls the station (start, stop) moves the state first, so that two workers
  never both send it;
- a step that moves money (release, capture) calls the provider first with an idempotency
  key, then moves the state: after ``kill -9`` between the two the call is made again with
  the same key, and the provider does it once.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog

from csms.ports import (
    Background,
    CommandError,
    CsmsPort,
    IdTagInfo,
    StationRejected,
    TransactionStarted,
    TransactionStopped,
    from_db,
    to_db,
)
from ocpi_bridge.prices import AD_HOC_OWNER, Bill, Offer, Pricing, money_minor

from . import costmsg
from .config import AdhocSettings
from .core import (
    TAG_ACCEPTED,
    Capture,
    Facts,
    FixPrice,
    MarkAuthorized,
    MarkCharging,
    MarkStopped,
    Reason,
    Release,
    StartCharge,
    State,
    StopCharge,
    Timing,
    capped,
    next_step,
    retry_delay,
)
from .providers.base import HoldRequest, HoldStatus, Provider, ProviderError, WebhookEvent
from .receipts_data import receipt_body
from .store import AdhocStore, Taken
from .views import offer_view

log = structlog.get_logger("adhoc")

TERMINAL_OWNER = f"{AD_HOC_OWNER}:terminal"
# one-time id tags: AH + 16 base32 characters (80 bits), within OCPP's 20
TAG_PREFIX = "AH"
_TAG_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# seconds a station may be silent and still be shown as reachable on the public page
REACHABLE_SECONDS = 360
# a stop not followed by the transaction's end is asked again after this long
STOP_RETRY = timedelta(seconds=60)


def new_payment_id() -> str:
    return secrets.token_urlsafe(16)  # 128 bits: the driver's link is the secret


def new_id_tag() -> str:
    return TAG_PREFIX + "".join(secrets.choice(_TAG_ALPHABET) for _ in range(16))


class Refused(Exception):
    """The driver's request cannot be done; ``code`` names why (the page's message key)."""

    def __init__(self, code: str, status: int = 409) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class EvseView:
    """What the public page shows of an EVSE."""

    offer: Offer
    status: str  # free | busy | paying | offline | unavailable
    hold_minor: int


class AdhocTokenSource:
    """csms asks it about id tags no one else knows: a live payment's one-time tag, or a
    tag a payment terminal station uses."""

    name = "adhoc"

    def __init__(self, store: AdhocStore, terminals: Mapping[str, re.Pattern[str]]) -> None:
        self.store = store
        self.terminals = terminals

    async def lookup(self, id_tag: str, station_id: str) -> IdTagInfo | None:
        pattern = self.terminals.get(station_id)
        if pattern is not None and pattern.fullmatch(id_tag):
            return IdTagInfo("Accepted", source=self.name, owner=TERMINAL_OWNER)
        if not id_tag.startswith(TAG_PREFIX) or len(id_tag) != len(TAG_PREFIX) + 16:
            return None
        payment = await self.store.by_id_tag(id_tag)
        if payment is None:
            return None
        ok = payment["state"] in TAG_ACCEPTED and payment["station_id"] == station_id
        return IdTagInfo("Accepted" if ok else "Invalid", source=self.name, owner=AD_HOC_OWNER)


class AdhocService:
    def __init__(
        self,
        port: CsmsPort,
        settings: AdhocSettings,
        provider: Provider,
        pricing: Pricing | None = None,
    ) -> None:
        self.port = port
        self.settings = settings
        self.provider = provider
        self.clock = port.clock
        self.store = AdhocStore(port.db)
        self.pricing = pricing or Pricing(port)
        self.timing = Timing(
            timedelta(seconds=settings.payment_window), timedelta(seconds=settings.start_timeout)
        )
        self.terminals = {t.station: re.compile(t.id_tag_pattern) for t in settings.terminals}
        self.token_source = AdhocTokenSource(self.store, self.terminals)
        self.public_url = settings.public_url or ""
        self._wake = asyncio.Event()
        self._mail_wake = asyncio.Event()  # a receipt was issued
        self._stops_sent: dict[str, datetime] = {}  # payment -> when this process asked
        self._tasks = Background("adhoc")
        self._costmsg: set[str] = set()
        self._sub: Any = None
        self._passes = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, public_url: str) -> None:
        if not self.public_url:
            self.public_url = public_url.rstrip("/")
        self._costmsg = await self.store.costmsg_stations()
        self._sub = self.port.bus.subscribe("adhoc", kinds=(TransactionStarted, TransactionStopped))
        self._tasks.spawn(self._events(), "adhoc-events")
        self._tasks.spawn(self._worker(), "adhoc-worker")
        self._tasks.spawn(self._mailer(), "adhoc-mailer")
        await self._terminal_catch_up()

    async def stop(self) -> None:
        if self._sub is not None:
            self.port.bus.unsubscribe(self._sub)
        await self._tasks.stop()
        await self.provider.close()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ the driver

    async def evse(self, evse_uid: str) -> EvseView | None:
        offer = await self.pricing.offer_by_evse_uid(evse_uid)
        if offer is None:
            return None
        return EvseView(offer, await self._availability(offer), self.settings.hold_minor())

    async def _availability(self, offer: Offer) -> str:
        station = await self.port.station(offer.station_id)
        if station is None:
            return "unavailable"
        seen = station.last_seen_at
        now = self.clock.now()
        reachable = self.port.is_connected(offer.station_id) or (
            seen is not None and (now - seen).total_seconds() < REACHABLE_SECONDS
        )
        if not reachable:
            return "offline"
        if await self.store.claim_of(offer.station_id, offer.connector_id) is not None:
            return "paying"
        status = next(
            (c.status for c in station.connectors if c.connector_id == offer.connector_id), None
        )
        if await self.port.active_transaction_on(offer.station_id, offer.connector_id):
            return "busy"
        if status in ("Available", "Preparing"):
            return "free"
        if status in ("Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved"):
            return "busy"
        return "unavailable"

    async def begin(self, evse_uid: str, email: str | None, language: str) -> dict[str, Any]:
        """A driver asks to charge at an EVSE: the payment is created, the EVSE claimed and
        the hold asked of the provider. The payment (with ``redirect_url`` when the driver
        must confirm at the provider). Raises Refused."""
        view = await self.evse(evse_uid)
        if view is None:
            raise Refused("unknown_evse", 404)
        if view.status != "free":
            raise Refused(f"evse_{view.status}")
        offer, now = view.offer, self.clock.now()
        payment_id, hold = new_payment_id(), self.settings.hold_minor()
        row = {
            "id": payment_id,
            "kind": "online",
            "station_id": offer.station_id,
            "connector_id": offer.connector_id,
            "evse_uid": offer.evse_uid,
            "id_tag": new_id_tag(),
            "provider": self.provider.name,
            "state": str(State.PENDING),
            "currency": offer.currency,
            "hold_amount": hold,
            "tariff_id": offer.tariff_id,
            "tariff": offer.tariff.model_dump(mode="json", exclude_none=True),
            "place": place_of(offer),
            "email": email,
            "language": language,
        }
        taken = await self.store.create(row, now)
        if isinstance(taken, Taken):
            raise Refused("evse_paying")
        base = f"{self.public_url}/charge/s/{payment_id}"
        request = HoldRequest(
            payment_id=payment_id,
            amount=hold,
            currency=offer.currency,
            description=f"{offer.location.name or offer.location.id} {offer.evse_id}"[:200],
            email=email,
            return_url=f"{base}?paid=1",
            cancel_url=f"{base}?cancelled=1",
            language=language,
            methods=tuple(self.settings.stripe.methods),
        )
        try:
            created = await self.provider.create_hold(request)
        except ProviderError as e:
            log.warning("hold refused by the provider", payment=payment_id, error=str(e))
            await self.store.move(
                payment_id, State.PENDING, State.RELEASED, now, reason=str(Reason.DECLINED)
            )
            raise Refused("provider_error", 502) from None
        await self.store.note(payment_id, now, reference=created.reference)
        log.info(
            "ad hoc payment started",
            payment=payment_id,
            station_id=offer.station_id,
            connector_id=offer.connector_id,
            provider=self.provider.name,
            hold=hold,
        )
        if created.status == HoldStatus.AUTHORIZED:
            await self._authorized(payment_id, now)
        self.wake()
        out = await self.store.get(payment_id)
        assert out is not None
        out["redirect_url"] = created.redirect_url
        return out

    async def stop_requested(self, payment_id: str) -> bool:
        """The driver pressed stop: RemoteStopTransaction of its charge. False when there is
        no charge of that payment running."""
        p = await self.store.get(payment_id)
        if p is None or p["state"] != State.CHARGING or p["transaction_id"] is None:
            return False
        await self.store.note(
            payment_id, self.clock.now(), stop_requested_at=to_db(self.clock.now())
        )
        await self._remote_stop(p, int(p["transaction_id"]))
        return True

    async def cancel_requested(self, payment_id: str) -> bool:
        """The driver cancelled before paying (or before the start): the hold is released
        by the worker, at once. False when it is too late (the charge is starting)."""
        p = await self.store.get(payment_id)
        if p is None or p["state"] not in (State.PENDING, State.AUTHORIZED):
            return False
        now = self.clock.now()
        await self.store.note(payment_id, now, stop_requested_at=to_db(now))
        log.info("the driver cancelled the payment", payment=payment_id)
        self.wake()
        return True

    async def live(self, payment_id: str) -> dict[str, Any] | None:
        """What the driver's page shows now (their payment only)."""
        p = await self.store.get(payment_id)
        if p is None:
            return None
        out: dict[str, Any] = {
            "state": p["state"],
            "reason": p["reason"],
            "currency": p["currency"],
            "hold_amount": p["hold_amount"],
            "captured_amount": p["captured_amount"],
            "place": p["place"],
        }
        if p["transaction_id"] is not None:
            bill = await self._bill(p)
            if bill is not None:
                out.update(
                    energy_wh=bill.energy_wh,
                    duration_s=bill.duration_s,
                    cost=str(bill_total(bill)),
                    cost_minor=money_minor(bill_total(bill), p["currency"]),
                )
        receipt = await self.store.receipt_of(payment_id)
        if receipt is not None:
            out["receipt_number"] = receipt["number"]
        return out

    # ------------------------------------------------------------------ notifications

    async def webhook(self, body: bytes, headers: Mapping[str, str]) -> str:
        """A provider's notification: verified (WebhookRejected otherwise), then applied
        once. What was done: ``ignored``, ``replay`` or ``applied``."""
        now = self.clock.now()
        event = self.provider.verify_webhook(body, headers, now)
        if event is None:
            return "ignored"
        if not await self.store.first_time(self.provider.name, event.event_id, now):
            log.info("webhook replayed: ignored", event_id=event.event_id)
            return "replay"
        await self._apply(event, now)
        self.wake()
        return "applied"

    async def _apply(self, event: WebhookEvent, now: datetime) -> None:
        rows = await self.port.db.read(
            "SELECT id, state FROM adhoc_payments WHERE provider = ? AND reference = ?",
            (self.provider.name, event.reference),
        )
        for r in rows:
            log.info("webhook", payment=r["id"], state=r["state"], says=str(event.status))
            if r["state"] == State.PENDING and event.status == HoldStatus.AUTHORIZED:
                await self._authorized(r["id"], now)
            # other news (declined, released) is confirmed by the worker with hold_state

    async def _authorized(self, payment_id: str, now: datetime) -> None:
        if await self.store.move(
            payment_id, State.PENDING, State.AUTHORIZED, now, authorized_at=to_db(now)
        ):
            log.info("hold authorized", payment=payment_id)

    # ------------------------------------------------------------------ the worker

    async def _events(self) -> None:
        assert self._sub is not None
        async for event in self._sub:
            if isinstance(event, TransactionStarted) and event.tag_owner == TERMINAL_OWNER:
                try:
                    await self._terminal_started(event.transaction_id)
                except Exception:
                    log.exception("terminal transaction not recorded", tx=event.transaction_id)
            self.wake()

    async def _worker(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("ad hoc worker pass failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.poll_interval)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """One pass over the open payments that are due; how many steps were taken."""
        steps = 0
        self._passes += 1
        if self._passes % 720 == 1:
            await self.store.prune_events(self.clock.now() - timedelta(days=30))
        for p in await self.store.due(self.clock.now()):
            for _ in range(8):  # a payment goes as far as it can in one pass
                try:
                    moved = await self._step(p)
                except ProviderError as e:
                    await self._provider_failed(p, e)
                    break
                if not moved:
                    break
                steps += 1
                fresh = await self.store.get(p["id"])
                if fresh is None:
                    break
                p = fresh
            await self._running_cost(p)
        return steps

    async def _provider_failed(self, p: dict[str, Any], e: ProviderError) -> None:
        attempts = int(p["attempts"]) + 1
        retry_at = self.clock.now() + retry_delay(attempts)
        log.warning(
            "payment provider call failed",
            payment=p["id"],
            state=p["state"],
            attempts=attempts,
            retryable=e.retryable,
            error=str(e)[:300],
        )
        await self.store.failed_attempt(p["id"], attempts, str(e), retry_at)

    async def _facts(self, p: dict[str, Any]) -> Facts:
        state = State(p["state"])
        hold = None
        if state == State.PENDING and p["reference"]:
            hold = (await self.provider.hold_state(p["reference"])).status
        tx_id = p["transaction_id"]
        stopped = False
        cost = None
        if tx_id is None and state in (State.PENDING, State.AUTHORIZED, State.STARTING):
            tx = await self._transaction_of(p)
            tx_id = tx.id if tx is not None else None
        if tx_id is not None:
            tx = await self.port.transaction(int(tx_id))
            stopped = tx is not None and not tx.active
            if state == State.CHARGING and not stopped:
                bill = await self._bill(p)
                if bill is not None:
                    cost = money_minor(bill_total(bill), p["currency"])
        return Facts(
            state=state,
            created_at=from_db(p["created_at"]) or self.clock.now(),
            start_requested_at=from_db(p["start_requested_at"]),
            stop_requested_at=from_db(p["stop_requested_at"]),
            hold=hold,
            transaction_id=int(tx_id) if tx_id is not None else None,
            transaction_stopped=stopped,
            connected=self._reachable(p["station_id"]),
            authorized_at=from_db(p["authorized_at"]),
            cost_minor=cost,
            hold_minor=int(p["hold_amount"]) if p["kind"] == "online" else None,
            stop_in_flight=self._stop_in_flight(p["id"]),
        )

    async def _transaction_of(self, p: dict[str, Any]) -> Any:
        created = from_db(p["created_at"]) or self.clock.now()
        found = await self.port.transactions_started(
            created - timedelta(days=1),
            self.clock.now() + timedelta(days=1),
            station_id=p["station_id"],
            id_tag=p["id_tag"],
            after=None,
            limit=1,
        )
        return found[0] if found else None

    async def _step(self, p: dict[str, Any]) -> bool:
        """Take the payment's next step; True when it moved."""
        now = self.clock.now()
        step = next_step(await self._facts(p), now, self.timing)
        pid, state = p["id"], State(p["state"])
        if isinstance(step, MarkAuthorized):
            return await self.store.move(
                pid, state, State.AUTHORIZED, now, authorized_at=to_db(now)
            )
        if isinstance(step, Release):
            return await self._release(p, step.reason, now)
        if isinstance(step, StartCharge):
            return await self._start(p, now)
        if isinstance(step, MarkCharging):
            moved = await self.store.move(
                pid,
                state,
                State.CHARGING,
                now,
                transaction_id=step.transaction_id,
                started_at=to_db(now),
            )
            if moved:
                log.info("ad hoc charge started", payment=pid, transaction_id=step.transaction_id)
            return moved
        if isinstance(step, StopCharge):
            if p["stop_requested_at"] is None:
                log.info("the charge reached the amount held: stopping it", payment=pid)
                await self.store.note(pid, now, stop_requested_at=to_db(now))
            else:
                log.info("the stop is asked again", payment=pid)
            await self._remote_stop(p, step.transaction_id)
            return False
        if isinstance(step, MarkStopped):
            return await self.store.move(pid, state, State.STOPPED, now, stopped_at=to_db(now))
        if isinstance(step, FixPrice):
            return await self._fix_price(p, now)
        if isinstance(step, Capture):
            return await self._capture(p, now)
        return False

    async def _release(self, p: dict[str, Any], reason: Reason, now: datetime) -> bool:
        held = None
        if p["reference"] and p["kind"] == "online":
            held = await self.provider.release(p["reference"], f"release-{p['id']}")
        moved = await self.store.move(
            p["id"],
            State(p["state"]),
            State.RELEASED,
            now,
            reason=str(reason),
            finished_at=to_db(now),
        )
        if not moved and held is not None and held.status != HoldStatus.CAPTURED:
            # the hold was confirmed meanwhile (a webhook), but the provider has let it go
            # now: the charge must not start on it
            moved = await self.store.move(
                p["id"],
                State.AUTHORIZED,
                State.RELEASED,
                now,
                reason=str(reason),
                finished_at=to_db(now),
            )
        if moved:
            log.info("hold released", payment=p["id"], reason=str(reason))
        return moved

    async def _start(self, p: dict[str, Any], now: datetime) -> bool:
        if not await self.store.move(
            p["id"], State.AUTHORIZED, State.STARTING, now, start_requested_at=to_db(now)
        ):
            return False
        station, connector, tag = p["station_id"], int(p["connector_id"]), p["id_tag"]
        if station in self._costmsg:
            text = costmsg.price_text(_shown(p), p["language"])
            await self._data_transfer(station, costmsg.set_user_price(tag, text))
        try:
            answer = await self.port.send_command(
                station,
                "RemoteStartTransaction",
                {"connectorId": connector, "idTag": tag},
                origin=f"adhoc:{p['id']}",
            )
        except StationRejected as e:
            log.warning("station refused the start (CallError)", payment=p["id"], error=str(e))
            await self._release({**p, "state": State.STARTING}, Reason.STATION_REFUSED, now)
            return True
        except CommandError as e:
            if e.code == "station_offline":
                # tried again at the next passes, until start_timeout (then released)
                log.info("station not connected: the start waits for it", payment=p["id"])
                await self.store.move(
                    p["id"],
                    State.STARTING,
                    State.AUTHORIZED,
                    now,
                    attempts=0,
                    next_try_at=to_db(now + timedelta(seconds=5)),
                )
                return False
            # (a timeout: the station may still start; the start timeout decides)
            log.warning("no answer to the start", payment=p["id"], error=e.code)
            return True
        status = answer.get("status") if isinstance(answer, dict) else None
        if status != "Accepted":
            log.warning("station refused the start", payment=p["id"], status=status)
            await self._release({**p, "state": State.STARTING}, Reason.STATION_REFUSED, now)
        return True

    def _reachable(self, station_id: str) -> bool:
        """Connected here, or seen lately (connected to another node of a cluster)."""
        if self.port.is_connected(station_id):
            return True
        seen = self.port.last_seen(station_id)
        return seen is not None and (self.clock.now() - seen).total_seconds() < 90

    def _stop_in_flight(self, payment_id: str) -> bool:
        sent = self._stops_sent.get(payment_id)
        return sent is not None and (self.clock.now() - sent) < STOP_RETRY

    async def _remote_stop(self, p: dict[str, Any], transaction_id: int) -> None:
        """RemoteStopTransaction; asked again after STOP_RETRY, or after a restart, while
        the transaction runs on (at the next pass when it could not be delivered). Marked
        in flight before it is sent: another pass meanwhile does not send it twice."""
        self._stops_sent[p["id"]] = self.clock.now()
        if len(self._stops_sent) > 10_000:  # (the oldest are long answered)
            for old in sorted(self._stops_sent, key=self._stops_sent.__getitem__)[:5000]:
                del self._stops_sent[old]
        try:
            await self.port.send_command(
                p["station_id"],
                "RemoteStopTransaction",
                {"transactionId": transaction_id},
                origin=f"adhoc:{p['id']}",
            )
        except CommandError as e:
            log.warning("stop not sent", payment=p["id"], error=e.code)
            if e.code not in ("timeout", "station_call_error"):  # not delivered: next pass
                self._stops_sent.pop(p["id"], None)

    async def _bill(self, p: dict[str, Any]) -> Bill | None:
        from ocpi_bridge.pricing import TariffDef

        if p["transaction_id"] is None:
            return None
        tariff = TariffDef.model_validate(p["tariff"])
        return await self.pricing.bill(int(p["transaction_id"]), self.clock.now(), tariff)

    async def _fix_price(self, p: dict[str, Any], now: datetime) -> bool:
        bill = await self._bill(p)
        if bill is None:
            return False
        price = money_minor(bill_total(bill), p["currency"])
        amount = price if p["kind"] == "terminal" else capped(price, int(p["hold_amount"]))
        return await self.store.move(
            p["id"], State.STOPPED, State.CAPTURING, now, final_amount=amount
        )

    async def _capture(self, p: dict[str, Any], now: datetime) -> bool:
        amount = int(p["final_amount"] or 0)
        method = None
        if p["kind"] == "online":
            if amount > 0:
                state = await self.provider.capture(p["reference"], amount, f"capture-{p['id']}")
                captured, method = state.amount_captured, state.method
            else:
                await self.provider.release(p["reference"], f"release-{p['id']}")
                captured = 0
        else:
            captured, method = amount, "terminal"
        bill = await self._bill(p)
        assert bill is not None
        number = await self.store.captured(
            p["id"],
            captured,
            method,
            now,
            lambda n: receipt_body(
                self.settings, p, bill, n, now, captured, method or p["provider"]
            ),
        )
        if number is None:
            return False
        log.info(
            "payment captured, receipt issued",
            payment=p["id"],
            captured=captured,
            receipt=number,
        )
        self._mail_wake.set()
        if p["station_id"] in self._costmsg and p["transaction_id"] is not None:
            text = costmsg.price_text(_shown(p), p["language"])
            url = f"{self.public_url}/charge/s/{p['id']}"
            await self._data_transfer(
                p["station_id"],
                costmsg.final_cost(int(p["transaction_id"]), Decimal(captured) / 100, text, url),
            )
        return True

    # ------------------------------------------------------------------ price at the station

    async def _running_cost(self, p: dict[str, Any]) -> None:
        if p["state"] != State.CHARGING or p["station_id"] not in self._costmsg:
            return
        now = self.clock.now()
        last = from_db(p["cost_sent_at"])
        if last is not None and (now - last).total_seconds() < self.settings.running_cost_interval:
            return
        bill = await self._bill(p)
        if bill is None:
            return
        await self.store.note(p["id"], now, cost_sent_at=to_db(now))
        prices = {c.kind: c for c in _components(p)}
        payload = costmsg.running_cost(
            int(p["transaction_id"]),
            now,
            bill.energy_wh,
            bill_total(bill),
            kwh_price=_incl(prices.get("ENERGY")),
            hour_price=_incl(prices.get("TIME")),
            flat_fee=_incl(prices.get("FLAT")),
            price_text=None,
        )
        await self._data_transfer(p["station_id"], payload)

    async def _data_transfer(self, station_id: str, payload: dict[str, Any]) -> None:
        try:
            await self.port.send_command(
                station_id, "DataTransfer", payload, origin="adhoc:costmsg", timeout=30
            )
        except CommandError as e:
            log.info("price message not delivered", station_id=station_id, error=e.code)

    async def set_costmsg(self, station_id: str, on: bool) -> None:
        await self.store.set_costmsg(station_id, on, self.clock.now())
        self._costmsg = await self.store.costmsg_stations()

    # ------------------------------------------------------------------ payment terminals

    async def _terminal_started(self, transaction_id: int) -> None:
        tx = await self.port.transaction(transaction_id)
        if tx is None:
            return
        offer = await self.pricing.ad_hoc_offer(tx.station_id, tx.connector_id)
        if offer is None:
            log.warning(
                "terminal charge without an ad hoc tariff: no receipt",
                station_id=tx.station_id,
                transaction_id=transaction_id,
            )
            return
        now = self.clock.now()
        row = {
            "id": new_payment_id(),
            "kind": "terminal",
            "station_id": tx.station_id,
            "connector_id": tx.connector_id,
            "evse_uid": offer.evse_uid,
            "id_tag": tx.id_tag,
            "provider": "terminal",
            "state": str(State.CHARGING),
            "currency": offer.currency,
            "hold_amount": 0,
            "tariff_id": offer.tariff_id,
            "tariff": offer.tariff.model_dump(mode="json", exclude_none=True),
            "place": place_of(offer),
            "language": "pt",
            "transaction_id": transaction_id,
            "started_at": to_db(now),
        }
        if await self.store.terminal_payment(row, now):
            log.info(
                "terminal charge recorded", station_id=tx.station_id, transaction_id=transaction_id
            )

    async def _terminal_catch_up(self) -> None:
        """Terminal transactions started while no process was listening (a restart)."""
        if not self.terminals:
            return
        since = self.clock.now() - timedelta(days=2)
        for tx in await self.port.transactions_updated_since(since):
            if tx.tag_owner == TERMINAL_OWNER:
                await self._terminal_started(tx.id)

    # ------------------------------------------------------------------ receipts by e-mail

    async def _mailer(self) -> None:
        from .mail import send_receipts

        while True:
            self._mail_wake.clear()
            try:
                await send_receipts(self)
            except Exception:
                log.exception("receipt e-mails failed")
            try:  # a new receipt goes at once; others (a restart's) at the next pass
                await asyncio.wait_for(self._mail_wake.wait(), timeout=60)
            except TimeoutError:
                pass


# ---------------------------------------------------------------------- helpers


def bill_total(bill: Bill) -> Decimal:
    """What the driver pays: incl. VAT when the tariff gives VAT, else excl."""
    return bill.total_incl_vat if bill.total_incl_vat is not None else bill.total_excl_vat


def place_of(offer: Offer) -> dict[str, Any]:
    """The location and EVSE as shown to the driver (kept with the payment)."""
    return offer_view(offer)


@dataclass(frozen=True, slots=True)
class _Shown:
    kind: str
    price_excl_vat: Decimal
    vat_percent: Decimal | None


def _components(p: dict[str, Any]) -> list[_Shown]:
    out = []
    for c in p["place"].get("components") or []:
        vat = c.get("vat_percent")
        out.append(
            _Shown(
                c["kind"],
                Decimal(str(c["price_excl_vat"])),
                Decimal(str(vat)) if vat is not None else None,
            )
        )
    return out


def _shown(p: dict[str, Any]) -> list[_Shown]:
    return _components(p)


def _incl(c: _Shown | None) -> Decimal | None:
    if c is None:
        return None
    if c.vat_percent is None:
        return c.price_excl_vat
    return (c.price_excl_vat * (1 + c.vat_percent / 100)).quantize(Decimal("0.0001"))
