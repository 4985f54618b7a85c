"""MOBI.E rule R2: the commissioning e-mail (ocpi_bridge.commissioning).

Composition is checked on the message's bytes, parsed back with the standard library.
Delivery goes to a small SMTP server written here (asyncio, 127.0.0.1, port 0) or to .eml
files; retries run on a FakeClock. The last test boots a simulated station against a real
central system and its OCPI bridge.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from charger_sim import Behaviour, Station
from csms.api import errors_middleware
from csms.clock import FakeClock
from csms.config import apply_env
from csms.events import StationBooted
from csms.ports import CsmsPort
from csms.store import Store
from csms.timeparse import from_db
from ocpi_bridge.commissioning import (
    CommissioningNotices,
    NoticeSettings,
    commissioning_day,
    compose_notice,
    safe_name,
)
from tests import dbs
from tests.conftest import start_system

OPERATOR = "Energia Açoriana, Lda"
T0 = datetime(2026, 7, 14, 23, 30, tzinfo=UTC)  # 00:30 on 15 July in Lisbon
WAIT = 10.0  # bound on every wait


def parse(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def text(msg: email.message.EmailMessage) -> str:
    """The text part, with the message's CRLF line ends as "\n"."""
    return str(msg.get_content()).replace("\r\n", "\n")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- a tiny SMTP server


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes


@dataclass
class TinySmtp:
    """Just enough SMTP (RFC 5321) for smtplib: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA,
    RSET, NOOP, QUIT. ``refuse`` holds replies given to the next MAIL commands."""

    messages: list[Received] = field(default_factory=list)
    refuse: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    sessions: int = 0
    server: asyncio.Server | None = None

    async def start(self, serving: bool = True) -> int:
        # start_serving=False: bound but not listening, so connections are refused
        self.server = await asyncio.start_server(
            self._session, "127.0.0.1", 0, start_serving=serving
        )
        return self.port

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self) -> None:
        assert self.server is not None
        await self.server.start_serving()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1

        async def reply(*lines: str) -> None:
            writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
            await writer.drain()

        mail_from: str | None = None
        rcpts: list[str] = []
        try:
            await reply("220 tiny.test ESMTP")
            while True:
                line = await asyncio.wait_for(reader.readline(), WAIT)
                if not line:
                    return
                command = line.decode("ascii", "replace").rstrip("\r\n")
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    await reply("250-tiny.test", "250-8BITMIME", "250 AUTH PLAIN")
                elif verb == "HELO":
                    await reply("250 tiny.test")
                elif verb == "AUTH":
                    _, user, password = base64.b64decode(command.split()[2]).split(b"\0")
                    self.logins.append((user.decode(), password.decode()))
                    await reply("235 2.7.0 accepted")
                elif verb == "MAIL":
                    if self.refuse:
                        await reply(self.refuse.pop(0))
                        continue
                    mail_from, rcpts = _address(command), []
                    await reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpts.append(_address(command))
                    await reply("250 2.1.5 ok")
                elif verb == "DATA":
                    await reply("354 end with <CRLF>.<CRLF>")
                    data = bytearray()
                    while True:
                        chunk = await asyncio.wait_for(reader.readline(), WAIT)
                        if chunk in (b".\r\n", b""):
                            break
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    assert mail_from is not None
                    self.messages.append(Received(mail_from, rcpts, bytes(data)))
                    await reply("250 2.0.0 queued")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    await reply("250 2.0.0 ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 bye")
                    return
                else:
                    await reply("502 5.5.2 not implemented")
        finally:
            writer.close()


def _address(command: str) -> str:
    return command[command.index("<") + 1 : command.index(">")]


@pytest.fixture
async def smtp() -> AsyncIterator[TinySmtp]:
    server = TinySmtp()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def smtp_settings(port: int, **extra: Any) -> NoticeSettings:
    values: dict[str, Any] = {
        "sender": "noc@cpo.example.pt",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,  # the test server speaks plain SMTP
        "timeout": 5,
    }
    return NoticeSettings.model_validate({**values, **extra})


# ---------------------------------------------------------------------------- store and helpers


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    s = dbs.store_for_test(tmp_path / "db", clock)
    s.add_migrations("ocpi", "ocpi_bridge.migrations")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def notices_of(
    store: Store, clock: FakeClock, data_dir: Path, settings: NoticeSettings | None = None
) -> CommissioningNotices:
    return CommissioningNotices(
        CsmsPort(store, clock), OPERATOR, settings or NoticeSettings(), data_dir, rand=lambda: 0.5
    )


def booted(
    station_id: str = "PT-LSB-0001",
    at: datetime = T0,
    first_boot: bool = True,
    vendor: str = "Efacec",
    model: str = "QC45",
) -> StationBooted:
    return StationBooted(station_id, at, "Accepted", vendor, model, "SN-42", "3.1.0", first_boot)


async def idle(notices: CommissioningNotices) -> None:
    await asyncio.wait_for(notices.wait_idle(), WAIT)


async def row(store: Store, station_id: str = "PT-LSB-0001") -> dict[str, Any]:
    r = await store.read_one("SELECT * FROM ocpi_notices WHERE station_id = ?", (station_id,))
    assert r is not None
    return r


async def first_boot(store: Store, station_id: str, at: datetime) -> None:
    """A station as csms records its first accepted BootNotification."""
    await store.stations.ensure_undefined(station_id)
    payload = {"chargePointVendor": "Wallbox", "chargePointModel": "Commander 2"}
    status, first = await store.stations.record_boot(station_id, payload, at)
    assert (status, first) == ("Accepted", True)


# ---------------------------------------------------------------------------- composition


def test_subject_headers_and_body() -> None:
    msg = compose_notice(
        "PT-LSB-0001",
        OPERATOR,
        T0,
        "Efacec",
        "QC45",
        "SN-42",
        "3.1.0",
        NoticeSettings(sender="noc@cpo.example.pt"),
    )
    raw = msg.as_bytes()
    raw.decode("ascii")  # 7-bit: headers RFC 2047, body quoted-printable
    assert b"\r\n" in raw and b"Opera\xc3" not in raw
    parsed = parse(raw)
    assert parsed["Subject"] == "Entrada em Operação do Posto PT-LSB-0001"
    assert parsed["To"] == "mic@mobie.pt"
    assert parsed["Cc"] == "geral@mobie.pt"
    assert parsed["From"].addresses[0].display_name == OPERATOR
    assert parsed["From"].addresses[0].addr_spec == "noc@cpo.example.pt"
    assert parsed["Date"] == "Wed, 15 Jul 2026 00:30:00 +0100"
    assert parsed["Date"].datetime == T0
    assert parsed["Message-ID"] == "<mobie-r2.PT-LSB-0001.20260714T233000Z@cpo.example.pt>"
    assert parsed["Content-Language"] == "pt-PT"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert text(parsed).splitlines() == [
        "Vimos por este meio informar o comissionamento com sucesso do posto de carregamento "
        "com os seguintes dados:",
        "",
        "ID do Posto: PT-LSB-0001",
        "Nome do Operador: Energia Açoriana, Lda",
        "Dia do Comissionamento: 15/07/2026",
        "Fabricante: Efacec",
        "Modelo: QC45",
        "Número de Série: SN-42",
        "Versão de Firmware: 3.1.0",
        "",
        "Com os melhores cumprimentos,",
        "Energia Açoriana, Lda",
    ]


def test_optional_lines_and_deterministic_bytes() -> None:
    a = compose_notice("PT-LSB-0002", OPERATOR, T0, "ABB", "Terra AC")
    b = compose_notice("PT-LSB-0002", OPERATOR, T0, "ABB", "Terra AC")
    assert a.as_bytes() == b.as_bytes()
    parsed = parse(a.as_bytes())
    assert parsed["From"] is None  # no sender: a draft for a mail client
    assert parsed["Message-ID"] == "<mobie-r2.PT-LSB-0002.20260714T233000Z@localhost>"
    body = text(parsed)
    assert "Número de Série" not in body and "Firmware" not in body
    assert "Fabricante: ABB\nModelo: Terra AC\n" in body


@pytest.mark.parametrize(
    ("at", "day"),
    [
        (datetime(2026, 7, 14, 23, 30, tzinfo=UTC), "15/07/2026"),  # summer: UTC+1
        (datetime(2026, 7, 14, 22, 59, tzinfo=UTC), "14/07/2026"),
        (datetime(2026, 1, 15, 0, 30, tzinfo=UTC), "15/01/2026"),  # winter: UTC
        (datetime(2026, 1, 14, 23, 30, tzinfo=UTC), "14/01/2026"),
        (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), "29/03/2026"),  # the night DST starts
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "31/12/2026"),
    ],
)
def test_commissioning_day_is_lisbon_day(at: datetime, day: str) -> None:
    assert commissioning_day(at) == day
    body = text(parse(compose_notice("X", OPERATOR, at, "V", "M").as_bytes()))
    assert f"Dia do Comissionamento: {day}\n" in body


def test_azores_station_gets_the_lisbon_day() -> None:
    # 23:30 on 14 July in the Azores (UTC+0) is 00:30 on 15 July in Lisbon
    from zoneinfo import ZoneInfo

    local = datetime(2026, 7, 14, 23, 30, tzinfo=ZoneInfo("Atlantic/Azores"))
    assert commissioning_day(local) == "15/07/2026"


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compose_notice("X", OPERATOR, datetime(2026, 7, 14, 12, 0), "V", "M")


def test_station_values_cannot_add_headers_or_lines() -> None:
    msg = compose_notice(
        "PT-LSB-0001", OPERATOR, T0, "Evil\r\nBcc: spy@example.com", "M\nFabricante: fake"
    )
    parsed = parse(msg.as_bytes())
    assert parsed["Bcc"] is None
    lines = text(parsed).splitlines()
    assert "Fabricante: Evil Bcc: spy@example.com" in lines
    assert "Modelo: M Fabricante: fake" in lines
    assert sum(1 for line in lines if line.startswith("Fabricante:")) == 1


def test_safe_name() -> None:
    assert safe_name("PT-LSB-0001") == "PT-LSB-0001"
    odd = safe_name("../a b/é")
    assert odd.startswith("_a_b_-") and len(odd) == len("_a_b_-") + 8
    assert safe_name("a/b") != safe_name("a b")


# ---------------------------------------------------------------------------- settings


def test_settings_defaults_and_rules() -> None:
    s = NoticeSettings()
    assert (s.to, s.cc, s.sender, s.smtp_host) == ("mic@mobie.pt", ["geral@mobie.pt"], None, None)
    assert (s.smtp_port, s.smtp_starttls, s.smtp_ssl) == (587, True, False)
    with pytest.raises(ValidationError, match="sender: required when smtp_host is set"):
        NoticeSettings(smtp_host="smtp.example.pt")
    with pytest.raises(ValidationError, match="give both or neither"):
        NoticeSettings(smtp_username="noc")
    with pytest.raises(ValidationError, match="Extra inputs"):
        NoticeSettings.model_validate({"smtp_server": "x"})
    with pytest.raises(ValidationError):
        NoticeSettings(to="mic@mobie.pt\r\nBcc: spy@example.com")
    with pytest.raises(ValidationError):
        NoticeSettings(cc=["not an address"])


def test_password_from_environment_is_secret() -> None:
    raw = {"ocpi": {"notices": {"sender": "noc@cpo.example.pt", "smtp_host": "smtp.x.pt"}}}
    env = {
        "CSMS_OCPI__NOTICES__SMTP_USERNAME": "noc",
        "CSMS_OCPI__NOTICES__SMTP_PASSWORD": "s3cr3t-pw",
    }
    data = apply_env(raw, env)
    s = NoticeSettings.model_validate(data["ocpi"]["notices"])
    assert s.smtp_password is not None and s.smtp_password.get_secret_value() == "s3cr3t-pw"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.model_dump())
    # the loader reads values as TOML: digits arrive as an integer, kept as their text
    data = apply_env(raw, {**env, "CSMS_OCPI__NOTICES__SMTP_PASSWORD": "123456"})
    s = NoticeSettings.model_validate(data["ocpi"]["notices"])
    assert s.smtp_password is not None and s.smtp_password.get_secret_value() == "123456"
    data = apply_env(raw, {**env, "CSMS_OCPI__NOTICES__SMTP_PASSWORD": "1.50"})
    with pytest.raises(ValidationError, match="quoted string"):
        NoticeSettings.model_validate(data["ocpi"]["notices"])


def test_backoff_doubles_to_an_hour_with_jitter(store: Store, clock: FakeClock) -> None:
    n = notices_of(store, clock, Path("unused"))
    assert [n.backoff(a) for a in range(1, 10)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
        3600,
    ]
    port = CsmsPort(store, clock)
    low = CommissioningNotices(port, OPERATOR, NoticeSettings(), ".", rand=lambda: 0.0)
    high = CommissioningNotices(port, OPERATOR, NoticeSettings(), ".", rand=lambda: 1.0)
    assert low.backoff(1) == pytest.approx(24) and high.backoff(1) == pytest.approx(36)
    assert high.backoff(500) == pytest.approx(4320)


# ---------------------------------------------------------------------------- .eml files


async def test_eml_file_written_and_recorded(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    n = notices_of(store, clock, data_dir)
    await n.on_boot(booted())
    await idle(n)
    path = data_dir / "notices" / "20260714T233000Z-PT-LSB-0001.eml"
    assert sorted(p.name for p in (data_dir / "notices").iterdir()) == [path.name]  # no temp
    parsed = parse(path.read_bytes())
    assert parsed["Subject"] == "Entrada em Operação do Posto PT-LSB-0001"
    assert "Dia do Comissionamento: 15/07/2026" in text(parsed)
    r = await row(store)
    assert r["delivery"] == "file" and r["file"] == str(path)
    assert r["delivered_at"] == "2026-07-14T23:30:00.000000Z"
    assert r["attempts"] == 1 and r["last_error"] is None and r["next_attempt_at"] is None
    assert r["message"].encode() == path.read_bytes()
    assert n.next_wakeup() is None
    items, total = await n.list(10, 0)
    assert total == 1
    assert items == [
        {
            "station_id": "PT-LSB-0001",
            "subject": "Entrada em Operação do Posto PT-LSB-0001",
            "commissioned_at": "2026-07-14T23:30:00.000Z",
            "created_at": "2026-07-14T23:30:00.000Z",
            "delivered_at": "2026-07-14T23:30:00.000Z",
            "delivery": "file",
            "file": str(path),
            "attempts": 1,
            "last_error": None,
            "next_attempt_at": None,
        }
    ]


async def test_unsafe_station_id_gets_a_safe_file_name(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    n = notices_of(store, clock, tmp_path)
    await n.on_boot(booted("../../etc/x"))
    await idle(n)
    [path] = (tmp_path / "notices").iterdir()
    assert path.name.startswith("20260714T233000Z-_etc_x-") and path.suffix == ".eml"
    assert parse(path.read_bytes())["Subject"] == "Entrada em Operação do Posto ../../etc/x"


async def test_second_first_boot_event_changes_nothing(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    n = notices_of(store, clock, tmp_path)
    await n.on_boot(booted())
    await idle(n)
    before = await row(store)
    files = {p: p.read_bytes() for p in (tmp_path / "notices").iterdir()}
    await clock.advance(3600)
    await n.on_boot(booted(at=T0 + timedelta(hours=1), vendor="Other", model="Other"))
    await n.on_boot(booted(first_boot=False))  # a later, ordinary boot
    await idle(n)
    assert await row(store) == before
    assert {p: p.read_bytes() for p in (tmp_path / "notices").iterdir()} == files
    assert (await n.list(10, 0))[1] == 1


async def test_not_first_boot_makes_no_notice(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    n = notices_of(store, clock, tmp_path)
    await n.on_boot(booted(first_boot=False))
    await idle(n)
    assert await n.list(10, 0) == ([], 0)
    assert not (tmp_path / "notices").exists()


# ---------------------------------------------------------------------------- SMTP


async def test_smtp_delivery_to_and_cc(
    store: Store, clock: FakeClock, tmp_path: Path, smtp: TinySmtp
) -> None:
    settings = smtp_settings(smtp.port, smtp_username="noc", smtp_password="pw-123")
    n = notices_of(store, clock, tmp_path, settings)
    await n.on_boot(booted())
    await idle(n)
    [received] = smtp.messages
    assert received.mail_from == "noc@cpo.example.pt"
    assert received.rcpt_to == ["mic@mobie.pt", "geral@mobie.pt"]
    assert smtp.logins == [("noc", "pw-123")]
    parsed = parse(received.data)
    assert parsed["Subject"] == "Entrada em Operação do Posto PT-LSB-0001"
    assert parsed["To"] == "mic@mobie.pt" and parsed["Cc"] == "geral@mobie.pt"
    body = text(parsed)
    assert "Fabricante: Efacec\n" in body and "Modelo: QC45\n" in body
    assert "Dia do Comissionamento: 15/07/2026\n" in body
    r = await row(store)
    assert (r["delivery"], r["file"], r["attempts"], r["last_error"]) == ("smtp", None, 1, None)
    assert received.data == r["message"].encode()  # what is stored is what was sent
    assert not (tmp_path / "notices").exists()


async def test_starttls_required_never_falls_back_to_plain_text(
    store: Store, clock: FakeClock, tmp_path: Path, smtp: TinySmtp
) -> None:
    settings = smtp_settings(
        smtp.port, smtp_starttls=True, smtp_username="noc", smtp_password="pw-123"
    )
    n = notices_of(store, clock, tmp_path, settings)
    await n.on_boot(booted())
    await idle(n)
    r = await row(store)
    assert r["delivered_at"] is None and "STARTTLS extension not supported" in r["last_error"]
    assert smtp.logins == [] and smtp.messages == []  # the password never went out


async def test_retry_after_connection_refused(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    server = TinySmtp()
    await server.start(serving=False)  # bound, not listening: connections are refused
    try:
        n = notices_of(store, clock, tmp_path, smtp_settings(server.port))
        await n.on_boot(booted())
        await idle(n)
        r = await row(store)
        assert r["delivered_at"] is None and r["attempts"] == 1
        assert "ConnectionRefusedError" in r["last_error"]
        assert r["next_attempt_at"] == "2026-07-14T23:30:30.000000Z"  # 30 s (no jitter here)
        assert n.next_wakeup() == T0 + timedelta(seconds=30)

        await clock.advance(29)
        await n.retry_due(clock.now())  # not yet due
        await idle(n)
        assert (await row(store))["attempts"] == 1

        await server.serve()
        await clock.advance(1)
        await n.retry_due(clock.now())
        await idle(n)
        r = await row(store)
        assert r["delivery"] == "smtp" and r["attempts"] == 2 and r["last_error"] is None
        assert r["delivered_at"] == "2026-07-14T23:30:30.000000Z"
        assert len(server.messages) == 1 and n.next_wakeup() is None
        [item], _ = await n.list(10, 0)
        assert item["delivered_at"] == "2026-07-14T23:30:30.000Z" and item["attempts"] == 2
    finally:
        await server.close()


async def test_retry_after_451_with_growing_backoff(
    store: Store, clock: FakeClock, tmp_path: Path, smtp: TinySmtp
) -> None:
    smtp.refuse = ["451 4.3.0 try again later", "451 4.3.0 try again later"]
    n = notices_of(store, clock, tmp_path, smtp_settings(smtp.port))
    await n.on_boot(booted())
    await idle(n)
    r = await row(store)
    assert r["last_error"] == "SMTP 451 4.3.0 try again later" and r["attempts"] == 1
    assert n.next_wakeup() == T0 + timedelta(seconds=30)

    await clock.advance(30)
    await n.retry_due(clock.now())
    await idle(n)
    assert (await row(store))["attempts"] == 2
    assert n.next_wakeup() == T0 + timedelta(seconds=30 + 60)  # doubled

    await clock.advance(60)
    await n.retry_due(clock.now())
    await idle(n)
    r = await row(store)
    assert (r["delivery"], r["attempts"], r["last_error"]) == ("smtp", 3, None)
    assert len(smtp.messages) == 1 and smtp.sessions == 3


async def test_run_loop_retries_when_due(
    store: Store, clock: FakeClock, tmp_path: Path, smtp: TinySmtp
) -> None:
    smtp.refuse = ["451 4.3.0 busy"]
    n = notices_of(store, clock, tmp_path, smtp_settings(smtp.port))
    runner = asyncio.create_task(n.run())
    try:
        await n.on_boot(booted())

        async def failed_once() -> bool:
            return n.next_wakeup() is not None

        await eventually(failed_once)
        assert not smtp.messages
        await clock.advance(30)

        async def delivered() -> bool:
            return (await row(store))["delivered_at"] is not None

        await eventually(delivered)
        assert len(smtp.messages) == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await n.close()


async def test_commissioned_effect_reads_the_station(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    from ocpi_bridge.rules import Commissioned

    await first_boot(store, "PT-FNC-0007", T0)
    n = notices_of(store, clock, tmp_path)
    await n.on_commissioned(Commissioned("PT-FNC-0007", T0))
    await n.on_commissioned(Commissioned("PT-FNC-0007", T0))  # once only
    await idle(n)
    [path] = (tmp_path / "notices").iterdir()
    body = text(parse(path.read_bytes()))
    assert "Fabricante: Wallbox\nModelo: Commander 2\n" in body
    assert (await n.list(10, 0))[1] == 1


# ---------------------------------------------------------------------------- after a crash


async def test_reconcile_after_crash(
    store: Store, clock: FakeClock, tmp_path: Path, smtp: TinySmtp
) -> None:
    now = T0
    await first_boot(store, "LOST", now - timedelta(hours=2))  # event lost in the crash
    await first_boot(store, "OLD", now - timedelta(days=3))  # long before: not announced
    await first_boot(store, "DONE", now - timedelta(hours=1))  # notice delivered already
    await first_boot(store, "PENDING", now - timedelta(minutes=5))  # notice not yet delivered

    before = notices_of(store, clock, tmp_path)
    await before.on_boot(booted("DONE", now - timedelta(hours=1)))
    await idle(before)
    closed = TinySmtp()
    await closed.start(serving=False)
    failing = notices_of(store, clock, tmp_path, smtp_settings(closed.port))
    await failing.on_boot(booted("PENDING", now - timedelta(minutes=5)))
    await idle(failing)
    await closed.close()
    assert (await row(store, "PENDING"))["delivered_at"] is None
    done = await row(store, "DONE")
    # "crash": those instances are dropped; a new one starts with a working server
    n = notices_of(store, clock, tmp_path, smtp_settings(smtp.port))
    assert await n.reconcile(now) == 1
    await idle(n)

    sent = {parse(m.data)["Subject"]: parse(m.data) for m in smtp.messages}
    assert set(sent) == {
        "Entrada em Operação do Posto LOST",
        "Entrada em Operação do Posto PENDING",
    }
    lost = text(sent["Entrada em Operação do Posto LOST"])
    assert "Fabricante: Wallbox\nModelo: Commander 2\n" in lost  # from the stations table
    assert "Dia do Comissionamento: 14/07/2026\n" in lost  # 21:30 UTC = 22:30 in Lisbon
    assert (await row(store, "LOST"))["delivery"] == "smtp"
    pending = await row(store, "PENDING")
    assert pending["delivery"] == "smtp" and pending["attempts"] == 2  # retried at once
    assert await row(store, "DONE") == done
    assert await store.read_one("SELECT 1 FROM ocpi_notices WHERE station_id = 'OLD'") is None
    assert await n.reconcile(now) == 0  # nothing more to do
    await idle(n)
    assert len(smtp.messages) == 2


# ---------------------------------------------------------------------------- the API handler


async def test_list_handler(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    n = notices_of(store, clock, tmp_path)
    for i in range(3):
        await clock.advance(60)
        await n.on_boot(booted(f"ST-{i}", clock.now()))
    await idle(n)
    app = web.Application(middlewares=[errors_middleware])
    app.add_routes([web.get("/api/v1/ocpi/notices", n.list_handler)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/api/v1/ocpi/notices"
    try:
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(base, params={"limit": "2", "offset": "0"}) as resp:
                assert resp.status == 200 and resp.headers["X-Total-Count"] == "3"
                page = await resp.json()
            assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
            assert [i["station_id"] for i in page["items"]] == ["ST-2", "ST-1"]  # newest first
            assert page["items"][0]["delivery"] == "file"
            async with session.get(base, params={"offset": "2"}) as resp:
                assert [i["station_id"] for i in (await resp.json())["items"]] == ["ST-0"]
            async with session.get(base, params={"limit": "0"}) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == "invalid_query"
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------- end to end


async def test_end_to_end_station_boots_against_the_central_system(
    tmp_path: Path, smtp: TinySmtp
) -> None:
    system, session, running = await start_system(tmp_path, ocpi={})
    notices: CommissioningNotices | None = None
    consumer: asyncio.Task[None] | None = None
    sub = system.bus.subscribe("test-commissioning")
    st: Station | None = None
    try:
        versions = await system.store.schema_versions()
        assert versions["ocpi"] >= 2  # 0002_notices applied with the bridge's migrations
        notices = CommissioningNotices(
            system.port,
            "Operador de Teste Lda",
            smtp_settings(smtp.port),
            system.settings.data_dir,
        )
        assert await notices.reconcile(system.clock.now()) == 0

        async def consume() -> None:
            assert notices is not None
            async for event in sub:
                if isinstance(event, StationBooted):
                    await notices.on_boot(event)

        consumer = asyncio.create_task(consume())
        await running.define_station("PT-LSB-0001", 1)
        behaviour = Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01)
        st = Station(
            "PT-LSB-0001",
            running.ocpp_url,
            1,
            vendor="Efacec",
            model="QC45",
            serial_number="SN-42",
            firmware_version="3.1.0",
            behaviour=behaviour,
        )
        await asyncio.wait_for(st.connect(), WAIT)
        answer = await asyncio.wait_for(st.boot(), WAIT)
        assert answer["status"] == "Accepted"

        async def one_message() -> bool:
            return len(smtp.messages) == 1

        await eventually(one_message)
        await asyncio.wait_for(notices.wait_idle(), WAIT)
        station = await system.store.stations.get("PT-LSB-0001")
        assert station is not None and station["first_boot_at"] is not None

        # the station reboots: not a commissioning any more
        await asyncio.wait_for(st.boot(), WAIT)

        async def two_boots() -> bool:
            row = await system.store.stations.get("PT-LSB-0001")
            return row is not None and row["last_boot_at"] != row["first_boot_at"]

        await eventually(two_boots)
        await asyncio.sleep(0.2)
        await asyncio.wait_for(notices.wait_idle(), WAIT)
        assert len(smtp.messages) == 1

        [received] = smtp.messages
        assert received.rcpt_to == ["mic@mobie.pt", "geral@mobie.pt"]
        parsed = parse(received.data)
        assert parsed["Subject"] == "Entrada em Operação do Posto PT-LSB-0001"
        first = from_db(station["first_boot_at"])
        assert first is not None
        lines = text(parsed).splitlines()
        assert "ID do Posto: PT-LSB-0001" in lines
        assert "Nome do Operador: Operador de Teste Lda" in lines
        assert f"Dia do Comissionamento: {commissioning_day(first)}" in lines
        assert "Fabricante: Efacec" in lines and "Modelo: QC45" in lines
        assert "Número de Série: SN-42" in lines and "Versão de Firmware: 3.1.0" in lines
        items, total = await notices.list(10, 0)
        assert total == 1 and items[0]["delivery"] == "smtp" and items[0]["attempts"] == 1
    finally:
        if st is not None:
            await asyncio.wait_for(st.disconnect(), WAIT)
        if consumer is not None:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        system.bus.unsubscribe(sub)
        if notices is not None:
            await notices.close()
        await session.close()
        await system.stop()


async def test_end_to_end_through_the_push_rules_hook(tmp_path: Path) -> None:
    """The wiring proposed for the bridge: the pusher's ``on_commissioned`` hook."""
    system, session, running = await start_system(tmp_path, ocpi={})
    [ext] = system.extensions
    bridge = ext.bridge  # type: ignore[attr-defined]
    notices = CommissioningNotices(
        system.port,
        bridge.settings.business_name,
        NoticeSettings(),
        system.settings.data_dir,
    )
    bridge.pusher.on_commissioned = notices.on_commissioned
    st: Station | None = None
    try:
        await running.define_station("PT-PDL-0003", 1)
        behaviour = Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01)
        st = Station("PT-PDL-0003", running.ocpp_url, 1, behaviour=behaviour)
        await asyncio.wait_for(st.connect(), WAIT)
        assert (await asyncio.wait_for(st.boot(), WAIT))["status"] == "Accepted"
        directory = system.settings.data_dir / "notices"

        async def written() -> list[Path]:
            # a notice is written to a hidden temporary file, then renamed: only the result
            found = directory.glob("*.eml") if directory.exists() else []
            return sorted(p for p in found if not p.name.startswith("."))

        [path] = await eventually(written)
        assert path.name.endswith("-PT-PDL-0003.eml")
        parsed = parse(path.read_bytes())
        assert parsed["Subject"] == "Entrada em Operação do Posto PT-PDL-0003"
        lines = text(parsed).splitlines()
        assert "Nome do Operador: Operador de Teste Lda" in lines
        assert "Fabricante: SimVendor" in lines and "Modelo: SimModel-2" in lines
        await asyncio.wait_for(notices.wait_idle(), WAIT)
        [item], total = await notices.list(10, 0)
        assert total == 1 and item["delivery"] == "file" and item["file"] == str(path)
    finally:
        if st is not None:
            await asyncio.wait_for(st.disconnect(), WAIT)
        await notices.close()
        await session.close()
        await system.stop()
