"""The store's writer: a batch of jobs in one transaction, each in its savepoint, run in the
writer thread in one hand-over; results only after the commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from csms.clock import SystemClock
from csms.store import JobDb, JobSuspended, Store


async def open_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "csms.sqlite3", SystemClock())
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

        async def suspends(db: JobDb) -> None:
            await db.execute("DELETE FROM id_tags")
            await asyncio.sleep(0)  # not allowed: the job runs in the writer thread

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
        assert isinstance(results[50], JobSuspended)
        assert isinstance(results[51], ValueError)
        # the two bad jobs were rolled back to their savepoints; the 50 are committed
        rows = await store.read("SELECT COUNT(*) AS n FROM id_tags")
        assert rows[0]["n"] == 50
        assert store.commits - commits < 52  # group commit: fewer commits than jobs
    finally:
        await store.close()
    # committed means on disk: another connection sees the rows after close
    with sqlite3.connect(tmp_path / "csms.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM id_tags").fetchone()[0] == 50


async def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.close()

    async def job(db: JobDb) -> None:
        await db.execute("SELECT 1")

    with pytest.raises(RuntimeError):
        await store.write(job)
