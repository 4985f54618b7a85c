"""MOBI.E rule R2: the e-mail announcing that a station was commissioned.

Procedimento MOBI.E 02/2023, section 3, rule 2: on the day a station is commissioned, the
operator e-mails mic@mobie.pt with the subject ``Entrada em Operação do Posto [ID do Posto]``;
the body gives the day of connection and the station's manufacturer and model, in the form
of annex II (station ID, operator name, commissioning day DD/MM/AAAA). Annex II shows a
different subject (``Comissionamento OCPI - [ID do Posto] – [Nome do Operador]``); the rule
is the normative text, so its wording is the one used here.

Commissioning is the station's first accepted BootNotification (``StationBooted.first_boot``,
which csms emits once per station). :class:`CommissioningNotices` then stores one notice per
station in ``ocpi_notices`` and delivers it:

- with ``[ocpi.notices] smtp_host``: through that SMTP server (``smtplib`` in a worker
  thread; STARTTLS, implicit TLS and login as configured). A failed delivery stays pending
  and is retried after 30 s, 1 min, 2 min ... up to about 1 h, with jitter;
- without it: as ``<data_dir>/notices/<UTC time>-<station id>.eml``, for the operator to send
  from a mail client (written atomically). The rule asks for an e-mail: a file alone does
  not satisfy it, which is why that case is logged as a warning.

:meth:`CommissioningNotices.reconcile`, at start-up, creates the notices that a crash may
have lost (first boot within the last 24 h and no notice) and resumes pending deliveries.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import os
import random
import re
import smtplib
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from csms.ports import (
    DEFAULT_LIMIT,
    CsmsPort,
    StationBooted,
    api_contract,
    api_paging,
    client_context,
    from_db,
    to_db,
    to_ocpp,
)
from csms.ports import Tx as JobDb

log = structlog.get_logger("ocpi.notices")

MOBIE_TO = "mic@mobie.pt"
MOBIE_CC = "geral@mobie.pt"
LISBON = ZoneInfo("Europe/Lisbon")
# a station whose first boot is older than this at start-up gets no late notice: when this
# feature is first deployed, stations commissioned long ago must not be announced again
RECONCILE_WINDOW = timedelta(hours=24)
UNKNOWN = "desconhecido"

_ADDRESS = r"^[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

Email = Annotated[str, Field(pattern=_ADDRESS, max_length=254)]
# station id, commissioned at, vendor, model, serial number, firmware version
_Facts = tuple[str, datetime, str, str, str | None, str | None]


class NoticeSettings(BaseModel):
    """``[ocpi.notices]``: where the commissioning e-mail goes, and how.

    Without ``smtp_host`` nothing is sent: each notice is written as an ``.eml`` file under
    ``<data_dir>/notices/`` instead. ``smtp_ssl`` (implicit TLS, usually port 465) takes
    precedence over ``smtp_starttls`` (port 587). Give the password with the environment
    variable ``CSMS_OCPI__NOTICES__SMTP_PASSWORD`` rather than in the file; the loader reads
    environment values as TOML, so a password that looks like a number, a boolean or a date
    must be quoted (``'"1.50"'``).
    """

    model_config = ConfigDict(extra="forbid")

    to: Email = MOBIE_TO
    cc: list[Email] = Field(default_factory=lambda: [MOBIE_CC])
    sender: Email | None = Field(None, description="From; required with smtp_host")
    smtp_host: str | None = Field(None, min_length=1)
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_username: str | None = Field(None, min_length=1)
    smtp_password: SecretStr | None = None
    timeout: float = Field(30.0, gt=0, description="seconds, per SMTP operation")

    @field_validator("smtp_password", mode="before")
    @classmethod
    def _password_text(cls, v: Any) -> Any:
        # an environment value of digits arrives as a TOML integer: its text is exact
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if v is not None and not isinstance(v, str | SecretStr):
            raise ValueError("give the password as a quoted string")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> NoticeSettings:
        if self.smtp_host is not None and self.sender is None:
            raise ValueError("sender: required when smtp_host is set (the From address)")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password: give both or neither")
        return self


# ---------------------------------------------------------------------------- composition


def _clean(text: object) -> str:
    """One line of text: control characters (CR, LF ...) become spaces, so a value sent by
    a station can never add a header or a line to the message."""
    return " ".join(_CONTROL.sub(" ", str(text)).split())


def safe_name(station_id: str) -> str:
    """The station id as a file name and Message-ID part: ``[A-Za-z0-9_-]`` only, with a
    short hash of the original when characters had to be replaced (two ids never clash)."""
    name = _UNSAFE.sub("_", station_id)[:80] or "_"
    if name != station_id:
        name += "-" + hashlib.sha256(station_id.encode()).hexdigest()[:8]
    return name


def notice_subject(station_id: str) -> str:
    return f"Entrada em Operação do Posto {_clean(station_id)}"


def commissioning_day(commissioned_at: datetime) -> str:
    """The commissioning day as DD/MM/AAAA, in Lisbon time (Europe/Lisbon).

    Lisbon time, not the Location's own zone, for every station: MOBI.E works in Lisbon and
    judges "sent on the day of commissioning" by its own calendar, against the times it
    sees on its platform, and the issue asks for Lisbon time. One convention also keeps the
    notice independent of a Location's ``time_zone``. It only matters in the Azores
    (Atlantic/Azores, one hour behind): a station commissioned there at 23:30 local time is
    announced with the next day, the day on which MOBI.E receives the e-mail. Madeira keeps
    Lisbon's time.
    """
    if commissioned_at.tzinfo is None or commissioned_at.utcoffset() is None:
        raise ValueError("commissioned_at must be timezone-aware")
    return commissioned_at.astimezone(LISBON).strftime("%d/%m/%Y")


def notice_body(
    station_id: str,
    operator_name: str,
    commissioned_at: datetime,
    vendor: str,
    model: str,
    serial_number: str | None = None,
    firmware_version: str | None = None,
) -> str:
    """Annex II of Procedimento MOBI.E 02/2023, with the manufacturer and model rule 2 asks
    for, and the serial number and firmware when the station gave them."""
    operator = _clean(operator_name)
    lines = [
        "Vimos por este meio informar o comissionamento com sucesso do posto de carregamento "
        "com os seguintes dados:",
        "",
        f"ID do Posto: {_clean(station_id)}",
        f"Nome do Operador: {operator}",
        f"Dia do Comissionamento: {commissioning_day(commissioned_at)}",
        f"Fabricante: {_clean(vendor) or UNKNOWN}",
        f"Modelo: {_clean(model) or UNKNOWN}",
    ]
    if serial_number and _clean(serial_number):
        lines.append(f"Número de Série: {_clean(serial_number)}")
    if firmware_version and _clean(firmware_version):
        lines.append(f"Versão de Firmware: {_clean(firmware_version)}")
    lines += ["", "Com os melhores cumprimentos,", operator]
    return "\n".join(lines) + "\n"


def compose_notice(
    station_id: str,
    operator_name: str,
    commissioned_at: datetime,
    vendor: str,
    model: str,
    serial_number: str | None = None,
    firmware_version: str | None = None,
    settings: NoticeSettings | None = None,
) -> EmailMessage:
    """The R2 e-mail. Pure: the same arguments give the same bytes (``as_bytes()``).

    Date is the commissioning time (in Lisbon's offset) and Message-ID is derived from the
    station and that time, so a notice sent again after an uncertain failure (a timeout once
    the server had the message) carries the same Message-ID and can be recognised as one.
    Headers are RFC 2047-encoded and the text part is UTF-8 in quoted-printable: the whole
    message is 7-bit, for any SMTP server. Without a sender there is no From header (a
    draft for a mail client to complete).
    """
    settings = settings or NoticeSettings()
    body = notice_body(
        station_id,
        operator_name,
        commissioned_at,
        vendor,
        model,
        serial_number,
        firmware_version,
    )
    msg = EmailMessage(policy=policy.SMTP)
    if settings.sender:
        msg["From"] = Address(display_name=_clean(operator_name), addr_spec=settings.sender)
    msg["To"] = settings.to
    if settings.cc:
        msg["Cc"] = ", ".join(settings.cc)
    msg["Subject"] = notice_subject(station_id)
    msg["Date"] = format_datetime(commissioned_at.astimezone(LISBON))
    domain = settings.sender.rsplit("@", 1)[1] if settings.sender else "localhost"
    stamp = _stamp(commissioned_at)
    msg["Message-ID"] = f"<mobie-r2.{safe_name(station_id)}.{stamp}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    msg["Content-Language"] = "pt-PT"  # after set_content, which drops Content-* headers
    return msg


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _describe(exc: BaseException) -> str:
    """A failure as one readable line for ``last_error`` (never a credential)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{rcpt}: {code} {_text(resp)}" for rcpt, (code, resp) in exc.recipients.items()]
        text = "all recipients refused: " + "; ".join(parts)
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _clean(text)[:500]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------- the service


class CommissionedFact(Protocol):
    """The push rules' ``Commissioned`` effect, as far as notices read it."""

    station_id: str
    at: datetime


class CommissioningNotices:
    """Creates, stores and delivers the R2 notices.

    Deliveries run as background tasks (SMTP and file writes in worker threads), so neither
    :meth:`on_boot` nor :meth:`retry_due` waits for a mail server: they return once what
    they decided is committed. :meth:`wait_idle` waits for the deliveries under way.

    The schedule of retries is also kept in memory (:meth:`next_wakeup`); whoever drives
    :meth:`retry_due` is told of a change through ``wake``, or :meth:`run` does it all.
    """

    def __init__(
        self,
        csms: CsmsPort,
        operator_name: str,
        settings: NoticeSettings,
        data_dir: Path | str,
        *,
        rand: Callable[[], float] = random.random,
        retry_initial: float = 30.0,
        retry_max: float = 3600.0,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.csms = csms
        self.store = csms.db  # the bridge's own tables (ocpi_notices)
        self.clock = csms.clock
        self.operator_name = operator_name
        self.settings = settings
        self.directory = Path(data_dir) / "notices"
        self._rand = rand
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._wake = wake
        self._due: dict[str, datetime] = {}  # pending, not in flight: when to try again
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ entry points

    async def on_boot(self, event: StationBooted) -> None:
        """A BootNotification was answered: on the first accepted one, create the notice and
        start delivering it. Never raises (a notice lost here is made by :meth:`reconcile`
        at the next start, within 24 h)."""
        if not event.first_boot:
            return
        await self._announce(
            (
                event.station_id,
                event.at,
                event.vendor,
                event.model,
                event.serial_number,
                event.firmware_version,
            )
        )

    async def on_commissioned(self, effect: CommissionedFact) -> None:
        """The same as :meth:`on_boot`, for the push rules' ``Commissioned`` effect (the
        station and the time only: manufacturer, model, serial number and firmware are read
        from the station, which csms stored before it published the boot)."""
        try:
            station = await self.csms.station(effect.station_id)
        except Exception:
            log.exception("station not readable", station_id=effect.station_id)
            return
        r = {
            "vendor": station.vendor if station else None,
            "model": station.model if station else None,
            "serial_number": station.serial_number if station else None,
            "firmware_version": station.firmware_version if station else None,
        }
        await self._announce(
            (
                effect.station_id,
                effect.at,
                r.get("vendor") or UNKNOWN,
                r.get("model") or UNKNOWN,
                r.get("serial_number"),
                r.get("firmware_version"),
            )
        )

    async def _announce(self, facts: _Facts) -> None:
        station_id, at = facts[0], facts[1]
        blog = log.bind(station_id=station_id)
        try:
            created = await self._create([facts])
        except Exception:
            blog.exception("commissioning notice could not be stored")
            return
        if not created:
            blog.info("commissioning notice exists already, unchanged")
            return
        blog.info("commissioning notice created", day=commissioning_day(at))
        self._start(station_id)

    async def retry_due(self, now: datetime) -> None:
        """Start the deliveries whose next attempt is due at ``now``."""
        for station_id, at in sorted(self._due.items(), key=lambda kv: kv[1]):
            if at <= now:
                self._start(station_id)

    def next_wakeup(self) -> datetime | None:
        """When :meth:`retry_due` has something to do; None when nothing is pending (or
        every pending notice is being delivered right now)."""
        return min(self._due.values(), default=None)

    async def reconcile(self, now: datetime) -> int:
        """At start-up: create the notices of stations first booted within the last 24 h that
        have none (the event was lost in a crash), and start every pending delivery at once.
        Returns how many notices were created."""
        booted = await self.csms.stations_first_booted_since(now - RECONCILE_WINDOW)
        noticed = {
            r["station_id"]
            for r in await self.store.read(
                "SELECT station_id FROM ocpi_notices WHERE station_id IN "
                f"({self.store.dialect.json_values('?')})",
                (json.dumps([st.id for st in booted]),),
            )
        }
        facts = []
        for st in booted:
            if st.id in noticed:
                continue
            assert st.first_boot_at is not None
            facts.append(
                (
                    st.id,
                    st.first_boot_at,
                    st.vendor or UNKNOWN,
                    st.model or UNKNOWN,
                    st.serial_number,
                    st.firmware_version,
                )
            )
        created = await self._create(facts) if facts else []
        for station_id in created:
            log.warning(
                "commissioning notice created late (its boot event was lost)",
                station_id=station_id,
            )
        # pending ones are tried at once, whatever their schedule: the restart may be the
        # operator's fix of the settings
        pending = await self.store.read(
            "SELECT station_id FROM ocpi_notices WHERE delivered_at IS NULL"
        )
        for r in pending:
            if r["station_id"] not in self._in_flight:
                self._due[r["station_id"]] = now
        if pending:
            log.info("commissioning notices pending", count=len(pending), created=len(created))
        self._notify()
        await self.retry_due(now)
        return len(created)

    async def run(self) -> None:
        """Retry pending deliveries when they are due, for ever (cancel to stop). An
        alternative to calling :meth:`retry_due` from another scheduler."""
        while True:
            self._changed.clear()
            await self.retry_due(self.clock.now())
            wakeup = self.next_wakeup()
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._changed.wait())]
            if wakeup is not None:
                waits.append(asyncio.ensure_future(self.clock.sleep_until(wakeup)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def wait_idle(self) -> None:
        """Return once no delivery is under way."""
        while self._in_flight:
            await asyncio.wait(list(self._in_flight.values()))

    async def close(self, grace: float = 5.0) -> None:
        """Give deliveries under way ``grace`` seconds, then cancel them (an SMTP exchange
        already in its thread still ends there; the notice stays pending and is sent again,
        with the same Message-ID, at the next start)."""
        tasks = list(self._in_flight.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # ------------------------------------------------------------------ the API

    async def list(
        self, limit: int = DEFAULT_LIMIT, offset: int = 0
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """Notices, newest first, as the operator API shows them."""
        rows = await self.store.read(
            "SELECT * FROM ocpi_notices ORDER BY created_at DESC, station_id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        total = await self.store.read_one("SELECT COUNT(*) AS n FROM ocpi_notices")
        return [_view(r) for r in rows], int(total["n"] if total else 0)

    @api_contract.operation(
        "Commissioning notices: stations that booted for the first time",
        tag="ocpi",
        query=api_contract.PAGING,
        responses={
            200: api_contract.ok("a page of them", api_contract.page_of(api_contract.obj()))
        },
    )
    async def list_handler(self, request: web.Request) -> web.Response:
        """``GET /api/v1/ocpi/notices?limit=&offset=``: ``{"items", "total", "limit",
        "offset"}``, as the other lists of the operator API."""
        limit, offset = api_paging(request)
        items, total = await self.list(limit, offset)
        return web.json_response(
            {"items": items, "total": total, "limit": limit, "offset": offset},
            headers={"X-Total-Count": str(total)},
        )

    # ------------------------------------------------------------------ storing

    async def _create(
        self,
        facts: builtins.list[_Facts],
    ) -> builtins.list[str]:
        """Insert the notices that do not exist yet; returns the station ids inserted."""
        now = self.clock.now()
        rows = []
        for f in facts:
            subject, body, raw = self._compose(f)
            station_id, at, vendor, model, serial, firmware = f
            rows.append(
                (
                    station_id,
                    to_db(at),
                    vendor,
                    model,
                    serial,
                    firmware,
                    subject,
                    body,
                    raw.decode("ascii"),
                    to_db(now),
                    to_db(now),
                )
            )

        async def job(db: JobDb) -> builtins.list[str]:
            created = []
            for row in rows:
                cur = await db.execute(
                    """INSERT INTO ocpi_notices (station_id, commissioned_at, vendor,
                           model, serial_number, firmware_version, subject, body, message,
                           created_at, next_attempt_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                    row,
                )
                if cur.rowcount == 1:
                    created.append(row[0])
            return created

        created = await self.store.write(job)
        for station_id in created:
            self._due.setdefault(station_id, now)
        return created

    def _compose(self, facts: _Facts) -> tuple[str, str, bytes]:
        """Subject, text and the whole message, with the current settings."""
        station_id, at, vendor, model, serial, firmware = facts
        msg = compose_notice(
            station_id, self.operator_name, at, vendor, model, serial, firmware, self.settings
        )
        body = notice_body(station_id, self.operator_name, at, vendor, model, serial, firmware)
        return str(msg["Subject"]), body, msg.as_bytes()

    # ------------------------------------------------------------------ delivering

    def _notify(self) -> None:
        self._changed.set()
        if self._wake is not None:
            self._wake()

    def _start(self, station_id: str) -> None:
        if station_id in self._in_flight:
            return
        self._due.pop(station_id, None)
        task = asyncio.create_task(self._deliver(station_id), name=f"r2-notice:{station_id}")
        self._in_flight[station_id] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._in_flight.get(station_id) is t:
                del self._in_flight[station_id]

        task.add_done_callback(done)

    async def _deliver(self, station_id: str) -> None:
        blog = log.bind(station_id=station_id)
        try:
            row = await self.store.read_one(
                "SELECT * FROM ocpi_notices WHERE station_id = ?", (station_id,)
            )
            if row is None or row["delivered_at"] is not None:
                return
            commissioned_at = from_db(row["commissioned_at"])
            assert commissioned_at is not None
            subject, body, raw = self._compose(
                (
                    station_id,
                    commissioned_at,
                    row["vendor"],
                    row["model"],
                    row["serial_number"],
                    row["firmware_version"],
                )
            )
            composed = (subject, body, raw.decode("ascii"))
        except Exception:
            blog.exception("commissioning notice could not be prepared")
            self._retry_later(station_id, self.clock.now() + timedelta(seconds=self._retry_max))
            return

        file: str | None = None
        note: str | None = None
        try:
            if self.settings.smtp_host:
                delivery = "smtp"
                refused = await asyncio.to_thread(self._send_smtp, raw)
                if refused:
                    note = _clean(
                        "some recipients refused: "
                        + "; ".join(f"{k}: {c} {_text(r)}" for k, (c, r) in refused.items())
                    )[:500]
            else:
                delivery = "file"
                name = f"{_stamp(commissioned_at)}-{safe_name(station_id)}.eml"
                file = await asyncio.to_thread(self._write_file, raw, name)
        except Exception as e:
            await self._failed(station_id, row["attempts"] + 1, _describe(e), composed)
            return

        now = self.clock.now()

        async def job(db: JobDb) -> None:
            await db.execute(
                """UPDATE ocpi_notices SET subject = ?, body = ?, message = ?, delivery = ?,
                       delivered_at = ?, file = ?, attempts = attempts + 1, last_error = ?,
                       next_attempt_at = NULL
                   WHERE station_id = ?""",
                (*composed, delivery, to_db(now), file, note, station_id),
            )

        try:
            await self.store.write(job)
        except Exception:
            # delivered but not recorded: it is sent again (same Message-ID) after a restart
            blog.exception("commissioning notice delivered but not recorded")
            return
        if delivery == "file":
            blog.warning(
                "commissioning notice written to a file: send it to MOBI.E (rule R2), or set "
                "[ocpi.notices] smtp_host",
                file=file,
                to=self.settings.to,
            )
        else:
            blog.info(
                "commissioning notice sent",
                to=self.settings.to,
                cc=self.settings.cc,
                refused=note,
                attempts=row["attempts"] + 1,
            )

    async def _failed(
        self, station_id: str, attempts: int, error: str, composed: tuple[str, str, str]
    ) -> None:
        now = self.clock.now()
        delay = self.backoff(attempts)
        next_at = now + timedelta(seconds=delay)

        async def job(db: JobDb) -> None:
            await db.execute(
                """UPDATE ocpi_notices SET subject = ?, body = ?, message = ?,
                       attempts = attempts + 1, last_error = ?, next_attempt_at = ?
                   WHERE station_id = ? AND delivered_at IS NULL""",
                (*composed, error, to_db(next_at), station_id),
            )

        try:
            await self.store.write(job)
        except Exception:
            log.exception("commissioning notice failure not recorded", station_id=station_id)
        log.warning(
            "commissioning notice not delivered, will retry",
            station_id=station_id,
            error=error,
            attempts=attempts,
            retry_in=round(delay, 1),
        )
        self._retry_later(station_id, next_at)

    def _retry_later(self, station_id: str, at: datetime) -> None:
        self._due[station_id] = at
        self._notify()

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failures: 30, 60, 120 ... up to
        ``retry_max``, each times a random factor in [0.8, 1.2)."""
        base = min(self._retry_max, self._retry_initial * 2 ** min(attempts - 1, 30))
        return base * (0.8 + 0.4 * self._rand())

    # ------------------------------------------------------------------ in worker threads

    def _send_smtp(self, raw: bytes) -> dict[str, tuple[int, bytes]]:
        s = self.settings
        assert s.smtp_host is not None and s.sender is not None
        recipients = [s.to, *s.cc]
        client: smtplib.SMTP
        if s.smtp_ssl:
            client = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.timeout, context=client_context()
            )
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
        with client:
            client.ehlo()
            if s.smtp_starttls and not s.smtp_ssl:
                client.starttls(context=client_context())
                client.ehlo()
            if s.smtp_username is not None and s.smtp_password is not None:
                client.login(s.smtp_username, s.smtp_password.get_secret_value())
            return client.sendmail(s.sender, recipients, raw)

    def _write_file(self, raw: bytes, name: str) -> str:
        """Write ``raw`` as ``name`` in the notices directory, atomically (a reader sees the
        whole file or none); the same notice written again replaces it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            final = self.directory / name
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError, AttributeError):
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return str(final)


def _view(row: dict[str, Any]) -> dict[str, Any]:
    def iso(text: str | None) -> str | None:
        value = from_db(text)
        return to_ocpp(value) if value else None

    return {
        "station_id": row["station_id"],
        "subject": row["subject"],
        "commissioned_at": iso(row["commissioned_at"]),
        "created_at": iso(row["created_at"]),
        "delivered_at": iso(row["delivered_at"]),
        "delivery": row["delivery"],
        "file": row["file"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "next_attempt_at": iso(row["next_attempt_at"]),
    }


__all__ = [
    "MOBIE_CC",
    "MOBIE_TO",
    "CommissioningNotices",
    "NoticeSettings",
    "commissioning_day",
    "compose_notice",
    "notice_body",
    "notice_subject",
    "safe_name",
]
