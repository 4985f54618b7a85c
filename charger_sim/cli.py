"""``charger-sim``: run many simulated charge points against a central system.

Scenarios (every station boots, reports Available on connector 0 and each connector, sends
heartbeats and answers the central system's calls in all of them):

* ``idle``: nothing more.
* ``charging``: sessions on random connectors with tags from ``--tags``: Preparing,
  Authorize, StartTransaction, Charging, periodic MeterValues, StopTransaction after a random
  time from ``--session-time``, Finishing, Available; the next session on a connector starts
  after a random pause from ``--idle-time``.
* ``remote``: obeys RemoteStartTransaction / RemoteStopTransaction (also true of the others).
* ``faults``: connectors go Faulted (random errorCode) for ``--fault-time`` seconds, every
  ``--idle-time`` seconds or so.
* ``offline``: ``charging`` plus offline periods (``--offline-every``, ``--offline-time``)
  during which transaction messages are queued; they are delivered after reconnecting.

With ``--cost-display`` the stations have the OCPP 1.6 pricing extension: each text the
central system has a display show (SetUserPrice, RunningCost, FinalCost) is printed to
stderr as ``[display <station>] <text>`` (not with ``--quiet``), and the summary lists
each station's last one.

A progress line goes to stderr every ``--progress-interval`` seconds (not with ``--quiet``),
the summary to stdout at the end (``--json`` for JSON). Exit code 0 when no error occurred
(connection failures, CallErrors, timeouts, invalid answers, unexpected disconnections,
undelivered messages), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import ocpp.messages
import structlog

from charger_sim.behaviour import Behaviour
from charger_sim.errors import SimulatorError
from charger_sim.security import SecurityOptions
from charger_sim.station import Station

SCENARIOS = ("idle", "charging", "remote", "faults", "offline")
FAULT_CODES = (
    "GroundFailure",
    "OverCurrentFailure",
    "HighTemperature",
    "ConnectorLockFailure",
    "PowerSwitchFailure",
    "OverVoltage",
)
log = structlog.get_logger("charger_sim.cli")


def _range(text: str) -> tuple[float, float]:
    """``"A:B"`` (or ``"A"``) seconds → (A, B)."""
    low, _, high = text.partition(":")
    try:
        first = float(low)
        second = float(high) if high else first
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX seconds, got {text!r}") from None
    if first < 0 or second < first:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, got {text!r}")
    return first, second


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charger-sim",
        description="OCPP 1.6J charge point simulator",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", default="ws://127.0.0.1:9000/ocpp", help="central system URL")
    parser.add_argument("--count", type=_positive_int, default=1, help="number of stations")
    parser.add_argument("--prefix", default="SIM-", help="station id prefix")
    parser.add_argument("--connectors", type=_positive_int, default=2, help="per station")
    parser.add_argument("--scenario", choices=SCENARIOS, default="idle")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    parser.add_argument("--password", help="HTTP Basic password (user = station id)")
    parser.add_argument("--tags", default="TAG1,TAG2,TAG3", help="idTags, comma separated")
    parser.add_argument(
        "--heartbeat-interval", type=int, help="seconds; overrides BootNotification's interval"
    )
    parser.add_argument("--meter-interval", type=int, help="MeterValueSampleInterval seconds")
    parser.add_argument("--ramp-up", type=float, default=0.0, help="seconds to start all")
    parser.add_argument("--seed", type=int, help="random seed (same choices on every run)")
    ranges = {
        "--idle-time": ("2:15", "pause before a connector's next session / fault"),
        "--session-time": ("10:60", "length of a charging session"),
        "--fault-time": ("2:10", "how long a connector stays Faulted"),
        "--offline-every": ("20:60", "time online between offline periods"),
        "--offline-time": ("3:10", "length of an offline period"),
    }
    for flag, (default, text) in ranges.items():
        parser.add_argument(
            flag, type=_range, default=default, metavar="MIN:MAX", help=f"seconds: {text}"
        )
    parser.add_argument("--response-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--progress-interval", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    sec = parser.add_argument_group("security (OCPP 1.6 security extension)")
    sec.add_argument(
        "--security-profile",
        type=int,
        choices=(1, 2, 3),
        default=1,
        help="1: Basic auth (ws or wss); 2: wss + Basic auth; 3: wss + client certificate",
    )
    sec.add_argument("--ca-file", help="CA certificate(s) that verify the central system (2, 3)")
    sec.add_argument("--client-cert", help="the station's certificate chain, PEM (profile 3)")
    sec.add_argument("--client-key", help="its private key, PEM (profile 3)")
    sec.add_argument(
        "--tls-url", help="URL used at profiles 2 and 3 (default: --url with ws:// as wss://)"
    )
    sec.add_argument(
        "--organization", default="SimOperator", help="O= of the stations' CSRs (the CPO name)"
    )
    sec.add_argument(
        "--sign-certificate",
        action="store_true",
        help="each station asks for a certificate (SignCertificate) after its first boot",
    )
    sec.add_argument(
        "--security-events",
        action="store_true",
        help="SecurityEventNotification at start-up, after resets and firmware installs",
    )
    parser.add_argument(
        "--cost-display",
        action="store_true",
        help="stations have the OCPP 1.6 pricing extension (org.openchargealliance.costmsg):"
        " what their displays show is printed to stderr, the last text is in the summary",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, errors only")
    return parser


def _configure_logging(level: str) -> None:
    numeric = getattr(logging, level.upper())
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class Runner:
    """Runs the stations of one ``charger-sim`` invocation."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = asyncio.Event()
        self.rng = random.Random(args.seed)
        self.tags = [tag.strip() for tag in args.tags.split(",") if tag.strip()] or ["TAG1"]
        self.errors: list[str] = []
        self.offline_periods = 0
        self.started = time.monotonic()
        width = max(4, len(str(args.count)))
        config: dict[str, str] = {}
        if args.meter_interval is not None:
            config["MeterValueSampleInterval"] = str(args.meter_interval)
        self.stations = [
            Station(
                f"{args.prefix}{index:0{width}d}",
                url=args.url,
                connectors=args.connectors,
                password=args.password,
                behaviour=Behaviour(
                    auto_reconnect=True, heartbeat_interval=args.heartbeat_interval
                ),
                response_timeout=args.response_timeout,
                config=config,
                security=SecurityOptions(
                    profile=args.security_profile,
                    ca_file=args.ca_file,
                    client_cert=args.client_cert,
                    client_key=args.client_key,
                    organization=args.organization,
                    tls_url=args.tls_url,
                    send_events=args.security_events,
                ),
                cost_display=args.cost_display,
            )
            for index in range(1, args.count + 1)
        ]
        if args.cost_display and not args.quiet:
            for st in self.stations:
                st.on_display = self._show

    @staticmethod
    def _show(st: Station, text: str) -> None:
        """A station's display changed (the pricing extension)."""
        print(f"[display {st.id}] {text}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        ramp = self.args.ramp_up / max(1, len(self.stations))
        tasks = [
            asyncio.create_task(
                self._station_main(st, index * ramp, random.Random(self.rng.random())),
                name=st.id,
            )
            for index, st in enumerate(self.stations)
        ]
        progress = asyncio.create_task(self._progress())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.args.duration)
        self.stop.set()
        grace = 5.0 + 2 * self.args.response_timeout
        done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            self.errors.append(f"{len(pending)} station(s) did not stop in time")
            await asyncio.wait(pending, timeout=5)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                self.errors.append(f"{task.get_name()}: {task.exception()!r}")
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        for st in self.stations:  # anything still running (cancelled stations)
            await st.disconnect()
        summary = self.summary()
        if self.args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(self.format_summary(summary))
        return 0 if summary["errors"] == 0 else 1

    async def _pause(self, seconds: float) -> bool:
        """Sleep; True when the run is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    async def _station_main(self, st: Station, delay: float, rng: random.Random) -> None:
        if await self._pause(delay):
            return
        if not await self._bring_up(st):
            return
        if self.args.sign_certificate:
            try:
                answer = await st.security.sign_certificate()
                if answer.get("status") != "Accepted":
                    self.errors.append(f"{st.id}: SignCertificate {answer.get('status')}")
            except (SimulatorError, TimeoutError) as exc:
                self.errors.append(f"{st.id}: SignCertificate failed: {exc}")
        workers: list[asyncio.Task[None]] = []
        scenario = self.args.scenario
        connectors = range(1, st.number_of_connectors + 1)
        if scenario in ("charging", "offline"):
            for cid in connectors:
                workers.append(asyncio.create_task(self._charging(st, cid, rng)))
        if scenario == "faults":
            for cid in connectors:
                workers.append(asyncio.create_task(self._faults(st, cid, rng)))
        if scenario == "offline":
            workers.append(asyncio.create_task(self._offline(st, rng)))
        try:
            await self.stop.wait()
            if workers:
                await asyncio.wait(workers, timeout=2 * self.args.response_timeout)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._shut_down(st)

    async def _bring_up(self, st: Station) -> bool:
        delay = 1.0
        while not self.stop.is_set():
            try:
                await st.connect()
                resp = await st.boot_and_report(retry=True)
                if resp.get("status") == "Accepted":
                    return True
                st.stats.record_error(f"boot not accepted: {resp.get('status')}")
            except Exception as exc:  # recorded in the station's stats
                log.warning("station start failed", station=st.id, error=repr(exc))
            await st.disconnect()
            if await self._pause(delay):
                return False
            delay = min(delay * 2, 30.0)
        return False

    async def _shut_down(self, st: Station) -> None:
        for cid, conn in st.connectors.items():
            if cid == 0:
                continue
            try:
                if conn.in_transaction:
                    await st.stop_charging(cid, "Local")
                elif conn.status == "Faulted" and st.connected:
                    await st.status(cid, "Available")
            except Exception as exc:
                st.stats.record_error(f"shutdown of connector {cid}: {exc!r}")
        if st.queued_messages and not st.connected:
            try:
                await st.go_online(boot=False, timeout=2 * self.args.response_timeout)
            except Exception as exc:
                log.warning("final reconnect failed", station=st.id, error=repr(exc))
        await st.disconnect()
        if st.queued_messages:
            st.stats.record_error(f"{len(st.queued_messages)} queued message(s) undelivered")

    async def _charging(self, st: Station, cid: int, rng: random.Random) -> None:
        conn = st.connectors[cid]
        offline_ok = self.args.scenario == "offline"
        while not await self._pause(rng.uniform(*self.args.idle_time)):
            if conn.in_transaction or conn.status != "Available" or conn.claimed:
                continue
            if conn.availability != "Operative" or not (st.connected or offline_ok):
                continue
            tag = rng.choice(self.tags)
            try:
                await st.start_charging(cid, tag)
            except (SimulatorError, TimeoutError) as exc:
                log.warning("session start failed", station=st.id, error=repr(exc))
                continue
            if not conn.in_transaction:
                continue
            if await self._pause(rng.uniform(*self.args.session_time)):
                return
            if conn.in_transaction and conn.id_tag == tag:
                try:
                    await st.stop_charging(cid, "Local", id_tag=tag)
                except (SimulatorError, TimeoutError) as exc:
                    log.warning("session stop failed", station=st.id, error=repr(exc))

    async def _faults(self, st: Station, cid: int, rng: random.Random) -> None:
        conn = st.connectors[cid]
        while not await self._pause(rng.uniform(*self.args.idle_time)):
            if conn.in_transaction or conn.status != "Available" or not st.connected:
                continue
            try:
                await st.status(cid, "Faulted", error_code=rng.choice(FAULT_CODES))
                await self._pause(rng.uniform(*self.args.fault_time))
                if conn.status == "Faulted":
                    await st.status(cid, "Available")
            except (SimulatorError, TimeoutError) as exc:
                log.warning("fault report failed", station=st.id, error=repr(exc))

    async def _offline(self, st: Station, rng: random.Random) -> None:
        while not await self._pause(rng.uniform(*self.args.offline_every)):
            if not st.connected:
                continue
            await st.go_offline()
            self.offline_periods += 1
            await self._pause(rng.uniform(*self.args.offline_time))
            delay = 1.0
            while not st.connected:
                try:
                    await st.go_online(boot=False)
                except Exception as exc:
                    log.warning("reconnect failed", station=st.id, error=repr(exc))
                    if await self._pause(delay):
                        return
                    delay = min(delay * 2, 30.0)
            if self.stop.is_set():
                return

    # ------------------------------------------------------------------ reporting

    def _totals(self) -> dict[str, Any]:
        sent: Counter[str] = Counter()
        errors = len(self.errors)
        for st in self.stations:
            sent.update(st.stats.sent)
            errors += st.stats.errors
        return {
            "connected": sum(1 for st in self.stations if st.connected),
            "booted": sum(1 for st in self.stations if st.connected and st.booted),
            "sent": sum(sent.values()),
            "answered": sum(sum(st.stats.answered.values()) for st in self.stations),
            "errors": errors,
            "active": sum(st.active_transactions for st in self.stations),
            "queued": sum(len(st.queued_messages) for st in self.stations),
            "received": sum(sum(st.stats.received.values()) for st in self.stations),
        }

    async def _progress(self) -> None:
        if self.args.quiet:
            return
        while True:
            await asyncio.sleep(self.args.progress_interval)
            t = self._totals()
            elapsed = time.monotonic() - self.started
            print(
                f"[{elapsed:7.1f}s] stations {t['connected']}/{len(self.stations)} connected,"
                f" {t['booted']} booted | sent {t['sent']} answered {t['answered']}"
                f" errors {t['errors']} | sessions active {t['active']} | queued {t['queued']}"
                f" | calls from CS {t['received']}",
                file=sys.stderr,
                flush=True,
            )

    def summary(self) -> dict[str, Any]:
        per_action: dict[str, dict[str, int]] = {}
        received: Counter[str] = Counter()
        errors = list(self.errors)
        totals = {"tx_started": 0, "tx_stopped": 0, "queued": 0, "dropped": 0, "undelivered": 0}
        booted = 0
        for st in self.stations:
            stats = st.stats
            actions = set(stats.sent) | set(stats.call_errors) | set(stats.timeouts)
            for action in actions:
                row = per_action.setdefault(
                    action, {"sent": 0, "answered": 0, "call_errors": 0, "timeouts": 0}
                )
                row["sent"] += stats.sent[action]
                row["answered"] += stats.answered[action]
                row["call_errors"] += stats.call_errors[action]
                row["timeouts"] += stats.timeouts[action]
            received.update(stats.received)
            totals["tx_started"] += stats.tx_started
            totals["tx_stopped"] += stats.tx_stopped
            totals["queued"] += stats.queued
            totals["dropped"] += stats.dropped
            totals["undelivered"] += len(st.queued_messages)
            booted += 1 if st.last_boot_response else 0
            errors.extend(f"{st.id}: {text}" for text in stats.last_errors)
        error_count = len(self.errors) + sum(st.stats.errors for st in self.stations)
        return {
            "scenario": self.args.scenario,
            "stations": len(self.stations),
            "connectors": self.args.connectors,
            "duration_s": round(time.monotonic() - self.started, 1),
            "stations_booted": booted,
            "calls_sent": dict(sorted(per_action.items())),
            "calls_received": dict(sorted(received.items())),
            "transactions_started": totals["tx_started"],
            "transactions_stopped": totals["tx_stopped"],
            "offline_periods": self.offline_periods,
            "queued_offline": totals["queued"],
            "dropped": totals["dropped"],
            "undelivered": totals["undelivered"],
            "errors": error_count,
            "error_samples": errors[:20],
            "displays": {st.id: st.display for st in self.stations if st.display is not None},
        }

    @staticmethod
    def format_summary(summary: dict[str, Any]) -> str:
        lines = [
            "charger-sim summary",
            f"  scenario {summary['scenario']}, {summary['stations']} station(s) x "
            f"{summary['connectors']} connector(s), {summary['duration_s']} s",
            f"  stations booted: {summary['stations_booted']}/{summary['stations']}",
            f"  {'calls sent':<32}{'sent':>8}{'answered':>10}{'CallError':>11}{'timeout':>9}",
        ]
        total = Counter[str]()
        for action, row in summary["calls_sent"].items():
            total.update(row)
            lines.append(
                f"    {action:<30}{row['sent']:>8}{row['answered']:>10}"
                f"{row['call_errors']:>11}{row['timeouts']:>9}"
            )
        lines.append(
            f"    {'total':<30}{total['sent']:>8}{total['answered']:>10}"
            f"{total['call_errors']:>11}{total['timeouts']:>9}"
        )
        lines.append("  calls received from the central system:")
        if not summary["calls_received"]:
            lines.append("    none")
        for action, count in summary["calls_received"].items():
            lines.append(f"    {action:<30}{count:>8}")
        lines.append(
            f"  transactions: started {summary['transactions_started']},"
            f" stopped {summary['transactions_stopped']}"
        )
        lines.append(
            f"  offline: periods {summary['offline_periods']}, queued {summary['queued_offline']},"
            f" dropped {summary['dropped']}, undelivered {summary['undelivered']}"
        )
        if summary["displays"]:
            lines.append("  displays (last text shown):")
            lines.extend(f"    {sid}: {text}" for sid, text in summary["displays"].items())
        lines.append(f"  errors: {summary['errors']}")
        lines.extend(f"    {text}" for text in summary["error_samples"])
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``charger-sim``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.client_cert) != bool(args.client_key):
        parser.error("--client-cert and --client-key go together")
    if args.security_profile == 3 and not args.client_cert:
        parser.error("--security-profile 3 needs --client-cert and --client-key")
    _configure_logging("error" if args.quiet else args.log_level)
    ocpp.messages.ASYNC_VALIDATION = False  # this process only: no thread hop per message
    try:
        return asyncio.run(Runner(args).run())
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
