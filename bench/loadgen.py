"""The load generator: one process playing a share of the stations over real websockets.

``python -m bench.loadgen SPEC.json`` (started by the harness). One task per station, a
lean client (:mod:`bench.wsclient`), frames built from string templates, no schema
validation. Each station boots, reports its connectors, then lives MOBI.E's day in simulated
time (heartbeats, sessions with meter values, status changes) while answering the central
system's ChangeConfiguration, GetConfiguration and TriggerMessage.

The harness talks to the process through pipes, one JSON object per line:

- stdin (commands): ``{"cmd": "speed", "k": K}`` changes the compression factor,
  ``{"cmd": "storm", "at": EPOCH, "spread": S}`` drops every connection at ``at`` and
  reconnects each station within ``S`` seconds, ``{"cmd": "snap"}`` asks for the answer
  times since the previous snap, ``{"cmd": "stop"}`` ends the run;
- stdout (reports): ``progress`` every second, ``snap`` answers, and ``done`` once the
  results file (a pickle, see :meth:`Worker.results`) is written.

Every answer time is measured from just before the frame is written to just after the
answer is parsed; send times are ``time.time()`` so that they compare with the hub's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from array import array
from collections import Counter
from typing import Any

from . import model
from .procs import save_pickle
from .wsclient import HandshakeFailed, WsProtocol, connect

IDLE, PLUGGED, CHARGING, FINISHING = 0, 1, 2, 3
STATUS_INDEX = {s: i for i, s in enumerate(model.OCPP_STATUSES)}

# live answer-time histogram: geometric buckets of 3 % from 10 us
HIST_BASE_US = 10.0
HIST_RATIO = 1.03
HIST_BUCKETS = 600
_LOG_RATIO = math.log(HIST_RATIO)


def hist_bucket(seconds: float) -> int:
    us = seconds * 1e6
    if us <= HIST_BASE_US:
        return 0
    return min(HIST_BUCKETS - 1, int(math.log(us / HIST_BASE_US) / _LOG_RATIO) + 1)


def hist_upper(bucket: int) -> float:
    """Upper edge of a bucket, in seconds."""
    return HIST_BASE_US * HIST_RATIO**bucket / 1e6


# ---------------------------------------------------------------------- frames

BOOT = (
    '{"chargePointVendor":"BenchCo","chargePointModel":"Lean AC 22",'
    '"chargePointSerialNumber":"SN%05d","chargeBoxSerialNumber":"CB%05d",'
    '"firmwareVersion":"1.4.2","meterType":"EM340","meterSerialNumber":"M%05d"}'
)
STATUS = '{"connectorId":%d,"errorCode":"NoError","status":"%s","timestamp":"%s"}'
AUTHORIZE = '{"idTag":"%s"}'
START = '{"connectorId":%d,"idTag":"%s","meterStart":%d,"timestamp":"%s"}'
METER = (
    '{"connectorId":%d,"transactionId":%d,"meterValue":[{"timestamp":"%s","sampledValue":['
    '{"value":"%d","context":"Sample.Periodic","measurand":"Energy.Active.Import.Register",'
    '"location":"Outlet","unit":"Wh"},'
    '{"value":"%d","context":"Sample.Periodic","measurand":"Power.Active.Import",'
    '"location":"Outlet","unit":"W"}]}]}'
)
STOP = (
    '{"transactionId":%d,"idTag":"%s","meterStop":%d,"timestamp":"%s","reason":"%s",'
    '"transactionData":[{"timestamp":"%s","sampledValue":[{"value":"%d",'
    '"context":"Transaction.End","measurand":"Energy.Active.Import.Register",'
    '"location":"Outlet","unit":"Wh"}]}]}'
)

_iso_second = -1
_iso_prefix = ""


def iso_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds, as chargers write it."""
    global _iso_second, _iso_prefix
    t = time.time()
    s = int(t)
    if s != _iso_second:
        _iso_second = s
        _iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return f"{_iso_prefix}.{int((t - s) * 1000):03d}Z"


# ---------------------------------------------------------------------- errors


class Disconnected(ConnectionError):
    pass


class CallTimeout(Exception):
    pass


class CallErrorAnswer(Exception):
    pass


# ---------------------------------------------------------------------- time


class SimClock:
    """Simulated seconds, running K times faster than real time; K can change."""

    def __init__(self, k: float) -> None:
        self.k = k
        self._r0 = time.monotonic()
        self._s0 = 0.0

    def now(self) -> float:
        return self._s0 + (time.monotonic() - self._r0) * self.k

    def set_speed(self, k: float) -> None:
        self._s0 = self.now()
        self._r0 = time.monotonic()
        self.k = k

    def real_delay(self, sim_t: float) -> float:
        return (sim_t - self.now()) / self.k


# ---------------------------------------------------------------------- measurements


class Recorder:
    def __init__(self) -> None:
        self.sent: dict[str, array[float]] = {a: array("d") for a in model.STATION_ACTIONS}
        self.rtt: dict[str, array[float]] = {a: array("d") for a in model.STATION_ACTIONS}
        self.errors: list[tuple[float, str, str, str]] = []  # (time, action, kind, detail)
        self.sn_t: array[float] = array("d")
        self.sn_station: array[int] = array("l")
        self.sn_conn: array[int] = array("b")
        self.sn_status: array[int] = array("b")
        self.server_calls: Counter[str] = Counter()
        self.calls_sent = 0
        self.unexpected = 0
        # live, reset by each snap
        self.live_hist = [0] * HIST_BUCKETS
        self.live_count = 0
        self.live_errors = 0
        self.live_max = 0.0
        self.live_late = 0.0

    def ok(self, action: str, t_send: float, rtt: float) -> None:
        self.sent[action].append(t_send)
        self.rtt[action].append(rtt)
        self.live_hist[hist_bucket(rtt)] += 1
        self.live_count += 1
        if rtt > self.live_max:
            self.live_max = rtt

    def error(self, action: str, kind: str, detail: str = "") -> None:
        self.errors.append((time.time(), action, kind, detail[:200]))
        self.live_errors += 1

    def snap(self) -> dict[str, Any]:
        hist = {i: n for i, n in enumerate(self.live_hist) if n}
        out = {
            "type": "snap",
            "hist": hist,
            "count": self.live_count,
            "errors": self.live_errors,
            "max": self.live_max,
            "late": self.live_late,
        }
        self.live_hist = [0] * HIST_BUCKETS
        self.live_count = self.live_errors = 0
        self.live_max = self.live_late = 0.0
        return out


# ---------------------------------------------------------------------- a connector


class Conn:
    __slots__ = (
        "cid",
        "end",
        "initial",
        "meter",
        "mt",
        "next",
        "pending_start",
        "phase",
        "power",
        "start_meter",
        "start_ts",
        "state",
        "status",
        "stop",
        "tag",
        "tx",
        "txrec",
    )

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.state = IDLE
        self.status = "Available"
        self.next = math.inf
        self.end = math.inf
        self.meter = 0  # energy register, Wh
        self.mt = 0.0  # simulated time of the register's value
        self.power = 0
        self.tag = ""
        self.tx: int | None = None
        self.pending_start = False  # a StartTransaction not answered yet (to replay)
        self.start_meter = 0
        self.start_ts = ""
        self.stop: tuple[int, str, str] | None = None  # (meter, timestamp, reason) to send
        self.txrec: list[Any] | None = None
        self.phase = 1.0  # share of the meter interval before the first MeterValues
        self.initial = 0.0  # length of a first session that starts later (warm-up)


# ---------------------------------------------------------------------- a station


class Station:
    __slots__ = (
        "booted_once",
        "config",
        "conns",
        "dropped",
        "idx",
        "next_hb",
        "path",
        "pend_action",
        "pend_fut",
        "pend_id",
        "pend_pc",
        "pend_t",
        "proto",
        "provisioned",
        "reconnect_at",
        "rng",
        "seq",
        "sid",
        "storm_rec",
        "w",
        "waiter",
    )

    def __init__(self, w: Worker, idx: int) -> None:
        self.w = w
        self.idx = idx
        self.sid = model.station_id(idx)
        self.path = f"{w.path_prefix}/{self.sid}"
        self.rng = random.Random(w.seed * 1_000_003 + idx)
        self.conns = [Conn(c) for c in range(1, w.connectors + 1)]
        self.config: dict[str, str] | None = None
        self.proto: WsProtocol | None = None
        self.seq = 0
        self.pend_id: str | None = None
        self.pend_fut: asyncio.Future[Any] | None = None
        self.pend_action = ""
        self.pend_t = 0.0
        self.pend_pc = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.next_hb = math.inf
        self.booted_once = False
        self.provisioned = False
        self.dropped = False
        self.reconnect_at = 0.0
        self.storm_rec: list[float] | None = None

    # ------------------------------------------------------------------ wire

    def on_message(self, text: str) -> None:
        w = self.w
        try:
            msg = json.loads(text)
            kind = msg[0]
        except (ValueError, IndexError, KeyError, TypeError):
            w.rec.unexpected += 1
            return
        if kind == 3 or kind == 4:
            fut = self.pend_fut
            if fut is None or fut.done() or msg[1] != self.pend_id:
                w.rec.unexpected += 1
                return
            rtt = time.perf_counter() - self.pend_pc
            if kind == 3:
                w.rec.ok(self.pend_action, self.pend_t, rtt)
                fut.set_result(msg[2])
            else:
                detail = f"{msg[2]}: {msg[3]}" if len(msg) > 3 else str(msg)
                w.rec.error(self.pend_action, "CallError", detail)
                fut.set_exception(CallErrorAnswer(detail))
        elif kind == 2:
            self.on_server_call(msg[1], msg[2], msg[3] if len(msg) > 3 else {})
        else:
            w.rec.unexpected += 1

    def on_lost(self, exc: Exception | None) -> None:
        w = self.w
        w.connected -= 1
        self.proto = None
        fut = self.pend_fut
        if fut is not None and not fut.done():
            fut.set_exception(Disconnected("connection lost"))
        if not self.dropped and not w.stopping:
            w.rec.error("connection", "disconnect", repr(exc))
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def reply(self, text: str) -> None:
        if self.proto is not None:
            with contextlib.suppress(ConnectionError):
                self.proto.send_text(text)

    async def call(self, action: str, payload: str) -> Any:
        """Send one request and wait for its answer (one at a time, as OCPP-J wants)."""
        while self.pend_fut is not None:
            with contextlib.suppress(Exception):
                await self.pend_fut
        proto = self.proto
        if proto is None or proto.closed:
            raise Disconnected("not connected")
        w = self.w
        self.seq += 1
        uid = str(self.seq)
        loop = w.loop
        fut: asyncio.Future[Any] = loop.create_future()
        self.pend_id, self.pend_fut, self.pend_action = uid, fut, action
        self.pend_t = time.time()
        self.pend_pc = time.perf_counter()
        w.rec.calls_sent += 1
        try:
            proto.send_text(f'[2,"{uid}","{action}",{payload}]')
        except ConnectionError:
            self.pend_fut = None
            raise Disconnected("not connected") from None
        timer = loop.call_later(w.call_timeout, self._timeout, fut, action)
        try:
            return await fut
        finally:
            timer.cancel()
            if self.pend_fut is fut:
                self.pend_fut = self.pend_id = None

    def _timeout(self, fut: asyncio.Future[Any], action: str) -> None:
        if not fut.done():
            self.w.rec.error(action, "timeout", f"no answer in {self.w.call_timeout:g} s")
            fut.set_exception(CallTimeout(action))

    async def status(self, cid: int, status: str) -> None:
        w = self.w
        rec = w.rec
        rec.sn_t.append(time.time())
        rec.sn_station.append(self.idx)
        rec.sn_conn.append(cid)
        rec.sn_status.append(STATUS_INDEX[status])
        if cid:
            self.conns[cid - 1].status = status
        await self.call("StatusNotification", STATUS % (cid, status, iso_now()))

    # ------------------------------------------------------------------ central system calls

    def on_server_call(self, uid: str, action: str, payload: Any) -> None:
        w = self.w
        w.rec.server_calls[action] += 1
        if not isinstance(payload, dict):
            payload = {}
        if action == "ChangeConfiguration":
            key, value = payload.get("key"), payload.get("value")
            if key in w.readonly_keys:
                answer = "Rejected"
            elif key in w.default_config:
                if self.config is None:
                    self.config = {}
                self.config[key] = str(value)
                answer = "Accepted"
            else:
                answer = "NotSupported"
            self.reply(f'[3,"{uid}",{{"status":"{answer}"}}]')
        elif action == "GetConfiguration":
            wanted = payload.get("key")
            config = dict(w.default_config)
            if self.config:
                config.update(self.config)
            keys = list(config) if not wanted else [k for k in wanted if k in config]
            out: dict[str, Any] = {
                "configurationKey": [
                    {"key": k, "readonly": k in w.readonly_keys, "value": config[k]} for k in keys
                ]
            }
            unknown = [k for k in wanted or () if k not in config]
            if unknown:
                out["unknownKey"] = unknown
            self.reply(json.dumps([3, uid, out], separators=(",", ":")))
            if not self.provisioned:
                self.provisioned = True
                w.provisioned += 1
        elif action == "TriggerMessage":
            what = payload.get("requestedMessage")
            if what in ("StatusNotification", "Heartbeat", "BootNotification", "MeterValues"):
                self.reply(f'[3,"{uid}",{{"status":"Accepted"}}]')
                w.spawn(self.triggered(what, payload.get("connectorId")))
            else:
                self.reply(f'[3,"{uid}",{{"status":"NotImplemented"}}]')
        else:
            self.reply(f'[4,"{uid}","NotImplemented","{action} is not supported here",{{}}]')

    async def triggered(self, what: str, cid: int | None) -> None:
        with contextlib.suppress(Disconnected, CallTimeout, CallErrorAnswer):
            if what == "StatusNotification":
                targets = [cid] if cid is not None else [0, *(c.cid for c in self.conns)]
                for c in targets:
                    if c == 0:
                        await self.status(0, "Available")
                    elif 1 <= c <= len(self.conns):
                        await self.status(c, self.conns[c - 1].status)
            elif what == "Heartbeat":
                await self.call("Heartbeat", "{}")
            elif what == "BootNotification":
                await self.call("BootNotification", self.boot_payload())
            elif what == "MeterValues":
                for c in self.conns:
                    if c.state == CHARGING and c.tx is not None and (cid is None or cid == c.cid):
                        await self.meter_values(c, self.w.clock.now())

    # ------------------------------------------------------------------ life

    def boot_payload(self) -> str:
        return BOOT % (self.idx, self.idx, self.idx)

    async def sleep_sim(self, sim_t: float) -> None:
        delay = self.w.clock.real_delay(sim_t)
        if delay > 0:
            await self.sleep_real(delay)

    async def sleep_real(self, delay: float) -> None:
        loop = self.w.loop
        fut = loop.create_future()
        handle = loop.call_later(delay, _resolve, fut)
        self.waiter = fut
        try:
            await fut
        finally:
            handle.cancel()
            self.waiter = None

    async def run(self, start_delay: float) -> None:
        w = self.w
        try:
            await asyncio.sleep(start_delay)
            first = True
            while not w.stopping:
                try:
                    if self.dropped:
                        await self.outage()
                        continue
                    if self.proto is None and first:
                        # the first connection: a limited number of stations at a time
                        # (the ramp-up follows what the server can take)
                        async with w.boot_gate:
                            await self.connect_and_boot()
                            first = False
                            await self.first_statuses()
                        continue
                    if self.proto is None:
                        await self.connect_and_boot()
                        await self.statuses_after_reconnect()
                        await self.flush_queued()
                        continue
                    await self.step()
                except (Disconnected, CallTimeout, CallErrorAnswer):
                    if self.proto is not None and not self.dropped and not w.stopping:
                        continue  # a timeout or an error answer: carry on with the next event
                    if not self.dropped and not w.stopping:
                        await self.sleep_real(1.0 + self.rng.random())
                except Exception as e:  # a bug of ours: count it, keep the station alive
                    w.rec.error("generator", type(e).__name__, repr(e))
                    await self.sleep_real(1.0)
        except asyncio.CancelledError:
            pass

    async def connect_and_boot(self) -> None:
        w = self.w
        attempt = 0
        while not w.stopping and not self.dropped:
            try:
                port = w.port_of(self.idx)
                self.proto = await connect(
                    w.host, port, self.path, self.on_message, self.on_lost, timeout=30.0
                )
                w.connected += 1
                break
            except (OSError, TimeoutError, HandshakeFailed) as e:
                w.rec.error("connect", type(e).__name__, str(e))
                attempt += 1
                await self.sleep_real(min(30.0, 2.0**attempt) * (0.5 + self.rng.random()))
        if self.proto is None:
            raise Disconnected("stopped")
        if self.storm_rec is not None:
            self.storm_rec[3] = time.time()
        while True:
            try:
                answer = await self.call("BootNotification", self.boot_payload())
            except (CallTimeout, CallErrorAnswer):  # counted; try again a little later
                await self.sleep_real(5.0 + 10.0 * self.rng.random())
                continue
            status = answer.get("status", "Accepted") if isinstance(answer, dict) else "Accepted"
            if status == "Accepted":
                break
            interval = answer.get("interval", 10) if isinstance(answer, dict) else 10
            await self.sleep_real(max(1.0, float(interval)))
        if self.storm_rec is not None:
            self.storm_rec[4] = time.time()
        if not self.booted_once:
            # the first heartbeat at a random phase: stations that booted together do not
            # stay in step for the rest of the day
            self.booted_once = True
            w.booted += 1
            self.next_hb = w.clock.now() + model.HEARTBEAT_S * self.rng.random()
        else:
            self.next_hb = w.clock.now() + model.HEARTBEAT_S

    async def first_statuses(self) -> None:
        """After the first boot: every connector's status; a third start charging."""
        w = self.w
        now = w.clock.now()
        rng = self.rng
        await self.status(0, "Available")
        for c in self.conns:
            c.meter = rng.randrange(100_000, 5_000_000)
            c.mt = now
            if rng.random() < model.CHARGING_SHARE:
                # in the middle of a session: what is left of it is a random share of its
                # length; it starts at once, or at a random moment of the warm-up (so that
                # sessions do not all have their R5 updates due at the same moment)
                length = rng.uniform(model.SESSION_MIN_S, model.SESSION_MAX_S) * rng.random()
                if w.initial_spread > 0:
                    c.state = IDLE
                    c.initial = length
                    c.next = now + w.initial_spread * rng.random()
                    await self.status(c.cid, "Available")
                else:
                    c.state = PLUGGED
                    c.end = length
                    c.next = now
                    c.phase = rng.random()
                    await self.status(c.cid, "Preparing")
            else:
                c.state = IDLE
                c.next = now + rng.uniform(model.IDLE_MIN_S, model.IDLE_MAX_S) * rng.random()
                await self.status(c.cid, "Available")

    async def statuses_after_reconnect(self) -> None:
        await self.status(0, "Available")
        for c in self.conns:
            await self.status(c.cid, c.status)

    async def flush_queued(self) -> None:
        """Transaction messages kept while offline, in order."""
        for c in self.conns:
            if c.stop is not None:
                await self.send_stop(c)
            elif c.pending_start:
                await self.send_start(c)
        if self.storm_rec is not None:
            self.storm_rec[5] = time.time()
            self.storm_rec = None
            self.w.storm_done += 1

    async def step(self) -> None:
        w = self.w
        now = w.clock.now()
        due = self.next_hb
        which: Conn | None = None
        for c in self.conns:
            if c.next < due:
                due, which = c.next, c
        if due > now:
            await self.sleep_sim(due)
            return
        late = (now - due) / w.clock.k
        if late > w.rec.live_late:
            w.rec.live_late = late
        if which is None:
            self.next_hb = max(due + model.HEARTBEAT_S, now)
            await self.call("Heartbeat", "{}")
            return
        c = which
        rng = self.rng
        if c.state == IDLE:
            c.state = PLUGGED
            c.next = now + rng.uniform(*model.PLUG_TO_START_S)
            c.end = rng.uniform(model.SESSION_MIN_S, model.SESSION_MAX_S)  # its length
            if c.initial:
                c.end, c.initial = c.initial, 0.0
            await self.status(c.cid, "Preparing")
        elif c.state == PLUGGED:
            await self.begin(c, c.end)
        elif c.state == CHARGING:
            if c.pending_start:  # its StartTransaction went unanswered: again
                await self.send_start(c)
            elif c.tx is None:  # refused or never started: the driver gives up
                c.state = FINISHING
                c.next = now + rng.uniform(*model.FINISH_TO_UNPLUG_S)
                await self.status(c.cid, "Finishing")
            elif now >= c.end:
                await self.finish(c, now, "Local")
            else:
                c.next = min(max(due + model.METER_INTERVAL_S, now), c.end)
                await self.meter_values(c, now)
        else:  # FINISHING
            c.state = IDLE
            c.next = now + rng.uniform(model.IDLE_MIN_S, model.IDLE_MAX_S)
            await self.status(c.cid, "Available")

    async def begin(self, c: Conn, length: float) -> None:
        """The card is presented: Authorize, StartTransaction, Charging."""
        w = self.w
        rng = self.rng
        c.tag = model.tag_id(rng.randrange(w.tags))
        c.power = rng.choice(model.POWERS_W)
        c.state = CHARGING
        now = w.clock.now()
        c.end = now + length
        c.next = min(now + model.METER_INTERVAL_S * c.phase, c.end)
        c.phase = 1.0
        await self.call("Authorize", AUTHORIZE % c.tag)
        c.start_meter = c.meter
        c.start_ts = iso_now()
        c.pending_start = True
        c.txrec = [self.idx, c.cid, None, c.meter, c.start_ts, None, False]
        w.txs.append(c.txrec)
        await self.send_start(c)
        await self.status(c.cid, "Charging")

    async def send_start(self, c: Conn) -> None:
        answer = await self.call(
            "StartTransaction", START % (c.cid, c.tag, c.start_meter, c.start_ts)
        )
        tx = answer.get("transactionId") if isinstance(answer, dict) else None
        if not isinstance(tx, int):  # the echo server does not number transactions
            self.w.local_tx += 1
            tx = self.w.local_tx
        c.tx = tx
        c.pending_start = False
        if c.txrec is not None:
            c.txrec[2] = tx

    def register(self, c: Conn, now: float) -> int:
        """The energy register now (it runs while charging)."""
        if c.state == CHARGING:
            c.meter += int(c.power * max(0.0, now - c.mt) / 3600.0)
        c.mt = now
        return c.meter

    async def meter_values(self, c: Conn, now: float) -> None:
        meter = self.register(c, now)
        power = c.power - self.rng.randrange(0, 300)
        assert c.tx is not None
        await self.call("MeterValues", METER % (c.cid, c.tx, iso_now(), meter, power))

    async def finish(self, c: Conn, now: float, reason: str) -> None:
        meter = self.register(c, now)
        c.stop = (meter, iso_now(), reason)
        c.state = FINISHING
        c.next = now + self.rng.uniform(*model.FINISH_TO_UNPLUG_S)
        await self.send_stop(c)
        await self.status(c.cid, "Finishing")

    async def send_stop(self, c: Conn) -> None:
        if c.pending_start:  # its start was never answered: replay it first
            await self.send_start(c)
        assert c.stop is not None and c.tx is not None
        meter, ts, reason = c.stop
        await self.call("StopTransaction", STOP % (c.tx, c.tag, meter, ts, reason, ts, meter))
        if c.txrec is not None:
            c.txrec[5] = meter
            c.txrec[6] = True
        c.stop = None
        c.tx = None
        c.txrec = None

    # ------------------------------------------------------------------ storm

    def drop(self, reconnect_at: float, dropped_at: float) -> None:
        """The network goes: the connection is reset; the station comes back at
        ``reconnect_at`` (epoch)."""
        self.dropped = True
        self.reconnect_at = reconnect_at
        # station, dropped, reconnect due, connected, booted, queued messages delivered
        self.storm_rec = [float(self.idx), dropped_at, reconnect_at, 0.0, 0.0, 0.0]
        self.w.storm_recs.append(self.storm_rec)
        if self.proto is not None:
            self.proto.abort()
        self.wake()

    async def outage(self) -> None:
        """Offline: sessions that were running end (their stops are queued); come back."""
        w = self.w
        now = w.clock.now()
        for c in self.conns:
            if c.state == CHARGING or c.pending_start or c.tx is not None:
                if c.stop is None and (c.tx is not None or c.pending_start):
                    meter = self.register(c, now)
                    c.stop = (meter, iso_now(), "EVDisconnected")
            c.state = IDLE
            c.status = "Available"
            c.next = math.inf
        while self.proto is not None and not w.stopping:  # the reset is under way
            await self.sleep_real(0.01)
        delay = self.reconnect_at - time.time()
        if delay > 0:
            await self.sleep_real(delay)
        self.dropped = False
        await self.connect_and_boot()
        await self.statuses_after_reconnect()
        await self.flush_queued()
        now = w.clock.now()
        for c in self.conns:
            c.mt = now
            c.next = now + self.rng.uniform(model.IDLE_MIN_S, model.IDLE_MAX_S) * self.rng.random()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# ---------------------------------------------------------------------- the process


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        # --nodes: one port per node, station i on node i mod N (as a TCP load balancer)
        self.ports: list[int] = list(spec.get("ports") or [])
        self.path_prefix: str = spec.get("path_prefix", "/ocpp")
        self.connectors: int = spec["connectors"]
        self.seed: int = spec.get("seed", 1)
        self.tags: int = spec["tags"]
        self.call_timeout: float = spec.get("call_timeout", 30.0)
        self.initial_spread: float = spec.get("initial_spread", 0.0)  # simulated seconds
        self.clock = SimClock(spec["compression"])
        self.rec = Recorder()
        self.default_config = {
            "HeartbeatInterval": "300",
            "MeterValueSampleInterval": "0",
            "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import",
            "ClockAlignedDataInterval": "0",
            "ConnectionTimeOut": "60",
            "LocalPreAuthorize": "false",
            "NumberOfConnectors": str(self.connectors),
            "StopTransactionOnEVSideDisconnect": "true",
            "SupportedFeatureProfiles": "Core,RemoteTrigger",
        }
        self.readonly_keys = frozenset({"NumberOfConnectors", "SupportedFeatureProfiles"})
        self.stations = [Station(self, idx) for idx in spec["stations"]]
        self.txs: list[list[Any]] = []
        self.storm_recs: list[list[float]] = []
        self.local_tx = 0
        self.connected = 0
        self.booted = 0
        self.provisioned = 0
        self.storm_done = 0
        self.stopping = False
        self._spawned: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.boot_gate = asyncio.Semaphore(max(1, int(spec.get("boot_concurrency", 100))))

    def port_of(self, idx: int) -> int:
        """The port station ``idx`` connects to (and reconnects to, after a storm)."""
        return self.ports[idx % len(self.ports)] if self.ports else self.port

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    async def run(self) -> None:
        loop = self.loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        start_at = self.spec.get("start_at", time.time())
        ramp = self.spec.get("ramp_up", 0.0)
        total = max(1, self.spec.get("total_stations", len(self.stations)))
        tasks = []
        for st in self.stations:
            delay = max(0.0, start_at - time.time()) + ramp * st.idx / total
            tasks.append(loop.create_task(st.run(delay)))
        reader = loop.create_task(self._commands())
        progress = loop.create_task(self._progress())
        await self._stop.wait()
        self.stopping = True
        for st in self.stations:
            if st.proto is not None:
                st.proto.abort()
            st.wake()
        pending = [*tasks, *self._spawned]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        reader.cancel()
        progress.cancel()
        save_pickle(self.spec["out"], self.results())
        self.emit({"type": "done"})

    def results(self) -> dict[str, Any]:
        rec = self.rec
        return {
            "sent": rec.sent,
            "rtt": rec.rtt,
            "errors": rec.errors,
            "sn": (rec.sn_t, rec.sn_station, rec.sn_conn, rec.sn_status),
            "txs": self.txs,
            "storm": self.storm_recs,
            "server_calls": dict(rec.server_calls),
            "calls_sent": rec.calls_sent,
            "unexpected": rec.unexpected,
            "booted": self.booted,
            "provisioned": self.provisioned,
        }

    async def _progress(self) -> None:
        while True:
            self.emit(
                {
                    "type": "progress",
                    "t": time.time(),
                    "connected": self.connected,
                    "booted": self.booted,
                    "provisioned": self.provisioned,
                    "calls_sent": self.rec.calls_sent,
                    "errors": len(self.rec.errors),
                    "storm_done": self.storm_done,
                    "storm_booted": sum(1 for r in self.storm_recs if r[4]),
                }
            )
            await asyncio.sleep(1.0)

    async def _commands(self) -> None:
        reader = asyncio.StreamReader()
        await self.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:  # the harness is gone
                self._stop.set()
                return
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            what = cmd.get("cmd")
            if what == "stop":
                self._stop.set()
            elif what == "speed":
                self.clock.set_speed(float(cmd["k"]))
                for st in self.stations:
                    st.wake()
            elif what == "snap":
                self.emit(self.rec.snap())
            elif what == "storm":
                self._storm(float(cmd["at"]), float(cmd["spread"]))

    def _storm(self, at: float, spread: float) -> None:
        def go() -> None:
            now = time.time()
            for st in self.stations:
                st.drop(at + st.rng.uniform(0.0, spread), now)

        self.loop.call_later(max(0.0, at - time.time()), go)


async def _main(spec: dict[str, Any]) -> None:
    await Worker(spec).run()


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.loadgen SPEC.json")
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    asyncio.run(_main(spec))


if __name__ == "__main__":
    main()
