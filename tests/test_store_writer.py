"""The store's writer, on the engine the suite runs on: a batch of jobs in one transaction,
each in its savepoint, results only after the commit (on SQLite run in the writer thread in
one hand-over). And the migrations: a database of an older version is brought up to date."""

from __future__ import annotations

import asyncio
import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

import csms.migrations as csms_migrations
import ocpi_bridge.migrations as ocpi_migrations
from csms.clock import SystemClock
from csms.store import JobDb, JobSuspended, Store
from tests import dbs


async def open_store(tmp_path: Path) -> Store:
    store = dbs.store_for_test(tmp_path, SystemClock(), "FULL")
    await store.open()
    return store


async def test_many_jobs_share_a_commit_and_a_bad_one_spoils_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:

        def put(tag: str) -> object:
            async def job(db: JobDb) -> int:
                cur = await db.execute(
                    "INSERT INTO id_tags (id_tag, status, created_at, updated_at) "
                    "VALUES (?, 'Accepted', '2026-01-01T00:00:00.000000Z', "
                    "'2026-01-01T00:00:00.000000Z')",
                    (tag,),
                )
                rows = await db.execute_fetchall(
                    "SELECT COUNT(*) FROM id_tags WHERE id_tag = ?", (tag,)
                )
                assert rows[0][0] == 1
                return cur.rowcount

            return job

        async def suspends(db: JobDb) -> str:
            await db.execute(
                "INSERT INTO id_tags (id_tag, status, created_at, updated_at) "
                "VALUES ('SLEPT', 'Accepted', '2026-01-01T00:00:00.000000Z', "
                "'2026-01-01T00:00:00.000000Z')"
            )
            # SQLite: not allowed, the job runs in the writer thread; PostgreSQL: jobs await
            await asyncio.sleep(0)
            return "slept"

        async def fails(db: JobDb) -> None:
            await db.execute("DELETE FROM id_tags")
            raise ValueError("refused")

        commits = store.commits
        results = await asyncio.gather(
            *(store.write(put(f"TAG{i}")) for i in range(50)),  # type: ignore[arg-type]
            store.write(suspends),
            store.write(fails),
            return_exceptions=True,
        )
        assert results[:50] == [1] * 50
        if store.engine == "sqlite":
            assert isinstance(results[50], JobSuspended)
            kept = 50
        else:
            assert results[50] == "slept"
            kept = 51
        assert isinstance(results[51], ValueError)
        # the bad jobs were rolled back to their savepoints; the others are committed
        rows = await store.read("SELECT COUNT(*) AS n FROM id_tags")
        assert rows[0]["n"] == kept
        assert store.commits - commits < 52  # group commit: fewer commits than jobs
    finally:
        await store.close()
    # committed means durable: another connection sees the rows after close
    async with dbs.database_at(tmp_path / "csms.sqlite3").connect() as conn:
        assert await conn.fetchone("SELECT COUNT(*) FROM id_tags") == (kept,)


async def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.close()

    async def job(db: JobDb) -> None:
        await db.execute("SELECT 1")

    with pytest.raises(RuntimeError):
        await store.write(job)


def _older_migrations(root: Path, package: str, upto: int) -> str:
    """A copy of ``package``'s migrations for the engine under test, the first ``upto``
    only: what an older version shipped. Returns the copy's package name."""
    name = "older_" + package.replace(".", "_")
    dest = root / name / dbs.ENGINE
    dest.mkdir(parents=True)
    (root / name / "__init__.py").touch()
    (dest / "__init__.py").touch()
    for entry in resources.files(f"{package}.{dbs.ENGINE}").iterdir():
        if entry.name.endswith(".sql") and int(entry.name[:4]) <= upto:
            with resources.as_file(entry) as src:
                shutil.copy(src, dest / entry.name)
    return name


async def test_an_older_database_is_migrated_with_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """csms at its first migration and the OCPI bridge at its sixth, with data, then opened
    by this version: the later migrations run, the data migrations fill what they derive."""
    root = tmp_path / "older"
    monkeypatch.syspath_prepend(str(root))
    t0, t1 = "2026-01-01T00:00:00.000000Z", "2026-01-02T00:00:00.000000Z"
    old = dbs.store_for_test(tmp_path, SystemClock())
    old.add_migrations("csms", _older_migrations(root, "csms.migrations", 1))
    old.add_migrations("ocpi", _older_migrations(root, "ocpi_bridge.migrations", 6))
    await old.open()
    try:
        assert await old.schema_versions() == {"csms": 1, "ocpi": 6}

        async def fill(db: JobDb) -> None:
            await db.execute(
                "INSERT INTO stations (id, defined, created_at, updated_at) VALUES "
                "('S1', 1, ?, ?), ('S2', 0, ?, ?)",
                (t0, t1, t0, t1),
            )
            await db.execute(
                "INSERT INTO transactions (station_id, connector_id, id_tag, id_tag_status, "
                "meter_start, start_time, start_received_at, start_key, meter_stop, "
                "stop_received_at) VALUES ('S1', 1, 'T', 'Accepted', 3000000000, ?, ?, 'k1', "
                "3000007500, ?), ('S1', 2, 'T', 'Accepted', 0, ?, ?, 'k2', NULL, NULL)",
                (t0, t0, t1, t0, t0),
            )
            for roles in ([{"role": "HUB", "party_id": "MOB"}], [{"role": "EMSP"}]):
                await db.execute(
                    "INSERT INTO ocpi_peers (status, token_in, token_out, token_out_base64, "
                    "versions_url, version, endpoints, roles, initiated_by, created_at, "
                    "updated_at) VALUES ('registered', ?, 'b', 1, 'https://x.invalid/v', "
                    "'2.2.1', '[]', ?, 'peer', ?, ?)",
                    (roles[0]["role"], json.dumps(roles), t0, t1),
                )

        await old.write(fill)
    finally:
        await old.close()

    store = dbs.store_for_test(tmp_path, SystemClock())
    store.add_migrations("ocpi", "ocpi_bridge.migrations")
    await store.open()
    try:
        newest = {
            name: max(int(f.name[:4]) for f in (Path(pkg) / "sqlite").glob("[0-9]*.sql"))
            for name, pkg in (
                ("csms", csms_migrations.__path__[0]),
                ("ocpi", ocpi_migrations.__path__[0]),
            )
        }
        assert await store.schema_versions() == newest
        rows = await store.read("SELECT id, defined_at FROM stations ORDER BY id")
        assert [(r["id"], r["defined_at"]) for r in rows] == [("S1", t1), ("S2", None)]
        rows = await store.read(
            "SELECT start_key, updated_at, meter_stop FROM transactions ORDER BY id"
        )
        assert [(r["start_key"], r["updated_at"], r["meter_stop"]) for r in rows] == [
            ("k1", t1, 3000007500),
            ("k2", t0, None),
        ]
        rows = await store.read(
            "SELECT p.token_in, g.role, g.source, g.granted_at FROM ocpi_peer_grants g "
            "JOIN ocpi_peers p ON p.id = g.peer_id ORDER BY p.id"
        )
        assert [tuple(r.values()) for r in rows] == [
            ("HUB", "HUB", "legacy", t1),
            ("EMSP", "EMSP", "legacy", t1),
        ]

        async def later(db: JobDb) -> int:
            await db.execute(
                "INSERT INTO status_log (station_id, connector_id, status, error_code, "
                "received_at) VALUES ('S1', 1, 'Available', 'NoError', ?)",
                (t1,),
            )
            cur = await db.execute(
                "INSERT INTO ocpi_security_events (at, kind, peer_id, detail) "
                "VALUES (?, 'claim_refused', 1, '{}') RETURNING id",
                (t1,),
            )
            return int((await cur.fetchone())[0])

        assert await store.write(later) == 1
    finally:
        await store.close()


@pytest.mark.sqlite_only
async def test_a_write_waits_for_another_process_holding_the_lock_longer_than_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """csms's delivery process writes the same SQLite file; a batch that finds the write
    lock taken longer than SQLite's busy_timeout waits its turn instead of failing."""
    import sqlite3
    import threading

    from csms.db import sqlite as engine

    monkeypatch.setattr(engine, "BUSY_TIMEOUT_MS", 50)
    store = dbs.store_for_test(tmp_path, SystemClock())
    await store.open()
    try:
        other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process's writer, in the middle of a batch
        release = threading.Timer(0.6, other.execute, ("COMMIT",))
        release.start()

        async def job(db: JobDb) -> int:
            await db.execute(
                "INSERT INTO id_tags (id_tag, status, created_at, updated_at) "
                "VALUES ('WAITED', 'Accepted', 'x', 'x')"
            )
            return 1

        assert await store.write(job) == 1  # (SQLite alone gives up after 50 ms)
        release.join()
        other.close()
        rows = await store.read("SELECT id_tag FROM id_tags WHERE id_tag = 'WAITED'")
        assert len(rows) == 1
    finally:
        await store.close()
