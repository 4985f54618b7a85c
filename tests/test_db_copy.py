"""`csms db copy`: an installation's SQLite database, made by real station traffic (the
simulator's stations charging and going offline, plus a hostile DataTransfer), copied through
the real command line into an empty PostgreSQL database; then every table compared row by row
by the test itself, and csms started on the copy carries on where the SQLite one stopped.

The source is SQLite by definition, so this runs in the SQLite pass; its target is a database
of the suite's PostgreSQL server (started by tests/dbs.py, as in the PostgreSQL pass)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests import dbs
from tests.conftest import OCPI_CONFIG, start_system
from tests.raw_client import RawClient
from tests.test_cli_db import _csms

pytestmark = pytest.mark.sqlite_only


def _config(tmp_path: Path) -> Path:
    """The same installation as start_system(..., ocpi={}) makes: csms and the OCPI bridge."""
    lines = [f'data_dir = "{tmp_path / "data"}"', "", "[ocpi]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in OCPI_CONFIG.items()]
    config = tmp_path / "csms.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


async def _make_traffic(tmp_path: Path) -> None:
    system, session, csms = await start_system(
        tmp_path,
        ocpi={},
        ocpp__accept_unknown_stations="true",
        id_tags__accept_unknown="true",
        ocpp__meter_value_sample_interval="1",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "charger_sim",
            *("--url", csms.ocpp_url, "--count", "4", "--connectors", "2"),
            *("--scenario", "offline", "--duration", "6", "--session-time", "1:2"),
            *("--idle-time", "0.2:0.5", "--offline-every", "1:2", "--offline-time", "0.5:1"),
            *("--seed", "13", "--json", "--quiet"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert json.loads(out)["transactions_started"] > 0
        # text PostgreSQL cannot hold as it is: a NUL in a station's DataTransfer
        client = await RawClient.open(f"{csms.ocpp_url}/HOSTILE")
        await client.ok("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        await client.ok("DataTransfer", {"vendorId": "acme\u0000", "data": "a\u0000b"})
        await client.close()
        await csms.put_tag("WEB-TAG")
    finally:
        await session.close()
        await system.stop()


def _sqlite_tables(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table of the SQLite file: its columns and its rows."""
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'"
            )
        ]
        out = {}
        for n in names:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{n}")')]
            rows = conn.execute(f'SELECT {", ".join(cols)} FROM "{n}"').fetchall()
            out[n] = (cols, [tuple(r) for r in rows])
        return out
    finally:
        conn.close()


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")  # how csms stores NUL on PostgreSQL
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


async def _postgres_rows(url: str, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        names = ", ".join(f'"{c}"' for c in cols)
        return [tuple(r) for r in await conn.fetch(f'SELECT {names} FROM "{table}"')]
    finally:
        await conn.close()


def _key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(repr(_comparable(v)) for v in row)


async def test_a_simulated_installation_moves_to_postgresql_without_losing_a_row(
    tmp_path: Path,
) -> None:
    await _make_traffic(tmp_path)
    config = _config(tmp_path)
    source = tmp_path / "data" / "csms.sqlite3"
    before = _sqlite_tables(source)
    counts = {t: len(rows) for t, (_, rows) in before.items()}
    assert counts["transactions"] > 0 and counts["meter_values"] > 0
    assert counts["data_transfers"] > 0 and counts["connector_status"] > 0

    name, url = dbs.create_database()
    try:
        copied = _csms(config, "db", "copy", "--to", url)
        assert copied.returncode == 0, copied.stdout + copied.stderr
        assert f"copied {sum(counts.values())} rows in {len(counts)} tables" in copied.stdout
        assert "verified: every table's row count" in copied.stdout
        assert "transactions: " in copied.stderr  # progress, per table

        # the test's own comparison: every row of every table, value by value
        for table, (cols, ours) in before.items():
            theirs = await _postgres_rows(url, table, cols)
            assert len(theirs) == len(ours), table
            mine = sorted(_key(r) for r in ours)
            got = sorted(_key(r) for r in theirs)
            if mine != got:
                diff = next(i for i, (a, b) in enumerate(zip(mine, got, strict=True)) if a != b)
                pytest.fail(f"{table} differs: {mine[diff]} != {got[diff]}")

        # a second copy into the same database refuses: it holds data now
        again = _csms(config, "db", "copy", "--to", url)
        assert again.returncode == 1
        assert "already holds data" in again.stderr

        # csms on the copy: the same transactions, and new rows get new keys
        system, session, csms = await start_system(
            tmp_path / "on-postgresql", ocpi={}, database__url=f'"{url}"'
        )
        try:
            _, page = await csms.api.get("/api/v1/transactions?limit=1")
            assert page["total"] == counts["transactions"]
            _, tag = await csms.api.get("/api/v1/id-tags/WEB-TAG")
            assert tag["id_tag"] == "WEB-TAG"
            await csms.define_station("AFTER")
            client = await RawClient.open(f"{csms.ocpp_url}/AFTER")
            await client.ok("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
            started = await client.ok(
                "StartTransaction",
                {"connectorId": 1, "idTag": "WEB-TAG", "meterStart": 0, "timestamp": _now()},
            )
            await client.close()
            cols, rows = before["transactions"]
            previous = max(r[cols.index("id")] for r in rows)
            assert started["transactionId"] > previous
        finally:
            await session.close()
            await system.stop()
    finally:
        dbs.drop_database(name)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def test_copy_refuses_what_it_cannot_copy_with_clear_errors(tmp_path: Path) -> None:
    config = _config(tmp_path)
    missing = _csms(config, "db", "copy", "--to", "postgresql://127.0.0.1:1/none")
    assert missing.returncode == 1
    assert "no SQLite database at" in missing.stderr
    wrong = _csms(config, "db", "copy", "--to", "mysql://u:secret@h/db")
    assert wrong.returncode == 2 and "--to must be a postgresql:// URL" in wrong.stderr
    source = _csms(config, "db", "copy", "--from", "postgresql://u:secret@h/db", "--to", "x")
    assert source.returncode == 2 and "--from must be sqlite:PATH" in source.stderr
    assert "secret" not in source.stderr + wrong.stderr


def test_copy_refuses_a_source_with_tables_csms_does_not_make(tmp_path: Path) -> None:
    """Names from the source file go into SQL text: only plain ones, as csms makes them."""
    config = _config(tmp_path)
    assert _csms(config, "migrate").returncode == 0
    conn = sqlite3.connect(tmp_path / "data" / "csms.sqlite3")
    conn.execute('CREATE TABLE "x"" (a) --" (a INTEGER)')
    conn.commit()
    conn.close()
    name, url = dbs.create_database()
    try:
        refused = _csms(config, "db", "copy", "--to", url)
        assert refused.returncode == 1
        assert "the source has tables csms does not make" in refused.stderr
    finally:
        dbs.drop_database(name)
