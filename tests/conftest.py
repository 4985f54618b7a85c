"""Shared fixtures: a real central system on loopback, with a real database.

The suite runs on SQLite (the default) or, with ``CSMS_TEST_DATABASE=postgresql``, on a
throwaway PostgreSQL server (tests/pg.py) where each test gets a fresh database of its own.
Tests about one engine's own mechanics are marked ``sqlite_only`` / ``postgresql_only`` and
are deselected in the other engine's run.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from csms.app import CentralSystem
from csms.clock import Clock
from csms.config import Settings, load_settings
from csms.logs import configure_logging
from csms.passwords import hash_password
from tests import dbs, pg

ADMIN_PASSWORD = "test-admin-pw"
# hashing is slow on purpose; one hash for the whole session
_ADMIN_HASH = hash_password(ADMIN_PASSWORD, log2_n=10)

configure_logging("info", "console")

# the harness's own variables, already read (tests/dbs.py, tests/pg.py): out of the
# environment, where csms (and every daemon a test starts) would refuse them as unknown keys
for _name in (dbs.ENGINE_ENV, pg.URL_ENV):
    os.environ.pop(_name, None)

ENGINE_MARKERS = {"sqlite_only": "sqlite", "postgresql_only": "postgresql"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about SQLite's own mechanics")
    config.addinivalue_line("markers", "postgresql_only: about PostgreSQL's own mechanics")


def pytest_report_header(config: pytest.Config) -> str:
    return f"database engine: {dbs.ENGINE} (CSMS_TEST_DATABASE)"


def _shard() -> tuple[int, int] | None:
    """``TEST_SHARD=k/n`` (from the Makefile): this process runs the k-th of n shares of
    the test files (every n-th file, in name order), so one engine's pass can use two
    processes. (Not CSMS_*: csms reads every CSMS_* variable as its configuration.)"""
    text = os.environ.get("TEST_SHARD", "")
    if not text:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise pytest.UsageError(f"TEST_SHARD={text!r}: k/n with 1 <= k <= n")
    return int(k), int(n)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Another engine's tests are deselected, not skipped: no test is skipped for want of
    an engine; with TEST_SHARD, the other shards' files are deselected too."""
    shard = _shard()
    files = sorted({item.path.name for item in items})
    mine = {f for i, f in enumerate(files) if shard is None or i % shard[1] == shard[0] - 1}
    keep, drop = [], []
    for item in items:
        engines = {e for m, e in ENGINE_MARKERS.items() if item.get_closest_marker(m)}
        wrong_engine = bool(engines) and dbs.ENGINE not in engines
        (drop if wrong_engine or item.path.name not in mine else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    dbs.stop_server()


@pytest.fixture(autouse=True)
def _test_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """On PostgreSQL, a fresh database per test, named by ``CSMS_DATABASE__URL`` for
    make_settings, the daemons the test starts and tests/dbs.py."""
    if not dbs.POSTGRES:
        yield
        return
    name, url = dbs.create_database()
    monkeypatch.setenv(dbs.URL_ENV, url)
    try:
        yield
    finally:
        dbs.drop_database(name)


@pytest.fixture(autouse=True)
def _no_daemon_left() -> Iterator[None]:
    """A daemon a failed test left running is killed (see tests/daemon.py), before its
    database is dropped (this fixture is set up after _test_database)."""
    yield
    from tests import daemon

    while daemon.STARTED:
        daemon.STARTED.pop().kill_if_running()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    env = {
        "CSMS_DATA_DIR": f'"{tmp_path / "data"}"',
        "CSMS_OCPP__HOST": '"127.0.0.1"',
        "CSMS_OCPP__PORT": "0",
        "CSMS_HTTP__HOST": '"127.0.0.1"',
        "CSMS_HTTP__PORT": "0",
        "CSMS_DATABASE__SYNCHRONOUS": '"NORMAL"',
        "CSMS_OCPP__CALL_TIMEOUT": "5",
    }
    url = os.environ.get(dbs.URL_ENV)
    if url:
        env[dbs.URL_ENV] = f'"{url}"'
    for key, value in overrides.items():
        env["CSMS_" + key.upper()] = value
    return load_settings(None, env)


class Api:
    """A small client of the operator API."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session
        token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}

    async def request(
        self, method: str, path: str, body: Any = None, auth: bool = True, **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(self.auth) if auth else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers, **kw
        ) as resp:
            text = await resp.text()
            try:
                import json

                data = json.loads(text) if text else None
            except ValueError:
                data = text
            return resp.status, data

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, body, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, body, **kw)


class Running:
    def __init__(self, system: CentralSystem, api: Api) -> None:
        self.system = system
        self.api = api

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.system.ocpp_port}/ocpp"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.system.http_port}"

    async def define_station(
        self, station_id: str, connectors: int = 2, **extra: Any
    ) -> dict[str, Any]:
        status, body = await self.api.put(
            f"/api/v1/stations/{station_id}", station_body(station_id, connectors, **extra)
        )
        assert status in (200, 201), body
        return body

    async def put_tag(self, id_tag: str, status: str = "Accepted", **extra: Any) -> None:
        code, body = await self.api.put(f"/api/v1/id-tags/{id_tag}", {"status": status, **extra})
        assert code in (200, 201), body


def station_body(station_id: str, connectors: int = 2, **extra: Any) -> dict[str, Any]:
    loc = f"LOC-{station_id}"[:36]
    return {
        "location": {
            "id": loc,
            "name": f"Station {station_id}",
            "address": "Avenida da Liberdade 1",
            "city": "Lisboa",
            "postal_code": "1250-096",
            "country": "PRT",
            "coordinates": {"latitude": "38.716670", "longitude": "-9.141670"},
            "time_zone": "Europe/Lisbon",
            "parking_type": "ON_STREET",
            "mobie_voltage_level": "BTN",
        },
        "evses": [
            {
                "connector_id": n,
                "uid": f"{loc}-{n:02d}"[:36],
                "evse_id": f"PT*MOB*E{station_id}*{n}"[:48],
                "capabilities": ["REMOTE_START_STOP_CAPABLE", "RFID_READER"],
                "connectors": [
                    {
                        "id": "1",
                        "standard": "IEC_62196_T2",
                        "format": "SOCKET",
                        "power_type": "AC_3_PHASE",
                        "max_voltage": 230,
                        "max_amperage": 32,
                        "max_electric_power": 22000,
                    }
                ],
            }
            for n in range(1, connectors + 1)
        ],
        **extra,
    }


OCPI_CONFIG = {
    "country_code": "PT",
    "party_id": "CPO",
    "business_name": "Operador de Teste Lda",
    "website": "https://cpo.example.pt",
    # every test peer listens on 127.0.0.1, which production refuses by default (issue 12)
    "allow_private_peer_addresses": True,
}

ADHOC_CONFIG = {
    "operator_name": "Operador de Teste Lda",
    "operator_tax_id": "PT509999990",
    "operator_address": "Rua do Teste 1, 1000-001 Lisboa",
}


async def start_system(
    tmp_path: Path,
    clock: Clock | None = None,
    ocpi: dict[str, Any] | None = None,
    adhoc: dict[str, Any] | None = None,
    smart: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[CentralSystem, aiohttp.ClientSession, Running]:
    """A central system on loopback; with ``ocpi`` (the [ocpi] section), the OCPI bridge too;
    with ``adhoc`` (the [adhoc] section), ad hoc charging; with ``smart`` (the [smart]
    section), smart charging."""
    settings = make_settings(tmp_path, **overrides)
    if ocpi is not None:
        settings._extension_sections["ocpi"] = {**OCPI_CONFIG, **ocpi}
    extensions: list[Any] = []
    if adhoc is not None:
        from adhoc.extension import AdhocExtension

        ad = AdhocExtension()
        extensions.append((ad, ad.validate_config({**ADHOC_CONFIG, **adhoc}, settings)))
    if smart is not None:
        from smartcharge.extension import SmartExtension

        sm = SmartExtension()
        extensions.append((sm, sm.validate_config({"enabled": True, **smart}, settings)))
    if ocpi is not None:
        from ocpi_bridge.extension import OcpiExtension

        ext = OcpiExtension()
        extensions.append((ext, ext.validate_config({**OCPI_CONFIG, **ocpi}, settings)))
    system = CentralSystem(
        settings, clock=clock, admin_password_hash=_ADMIN_HASH, extensions=extensions
    )
    await system.start()
    session = aiohttp.ClientSession()
    running = Running(system, Api(f"http://127.0.0.1:{system.http_port}", session))
    return system, session, running


@pytest.fixture
async def csms(tmp_path: Path) -> AsyncIterator[Running]:
    system, session, running = await start_system(tmp_path)
    try:
        yield running
    finally:
        await session.close()
        await system.stop()
