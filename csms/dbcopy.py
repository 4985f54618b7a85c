"""``csms db copy``: move an installation from its SQLite file to PostgreSQL, every row.

Both sides are brought to the same schema versions by their own migrations first; the target
must hold no data yet. Tables are copied parents first (foreign keys), in batches by rowid,
with progress reported per batch (table, rows copied, rows in the source table); generated
keys keep their values and PostgreSQL's identity sequences are moved past them. At the end
every table's row count is compared, and a sample of rows (the first, the last and some in
between, by key) is compared value by value: the copy reports failure on any difference.
Stop csms before copying: rows written meanwhile would be missed.
"""

from __future__ import annotations

import asyncio
import math
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import Database, DatabaseError, Tx
from .db.sqlite import SqliteDatabase

BATCH = 2000
# every table and column csms makes has a plain name; nothing else is put into SQL text
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SAMPLE = 25


class CopyError(DatabaseError):
    """The copy cannot start or did not produce an identical database."""


@dataclass
class CopyReport:
    tables: dict[str, int] = field(default_factory=dict)  # rows copied per table
    mismatches: list[str] = field(default_factory=list)
    sampled: int = 0

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _tables_in_order(conn: sqlite3.Connection) -> list[str]:
    """The source's tables, each after the tables its foreign keys point to."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'schema_migrations' ORDER BY name"
        )
    ]
    odd = [n for n in names if not _NAME.match(n)]
    if odd:  # ours are all plain names: this file was made or changed by something else
        raise CopyError(f"the source has tables csms does not make: {odd[:5]!r}")
    parents = {
        n: {r[2] for r in conn.execute(f'PRAGMA foreign_key_list("{n}")')} & set(names)
        for n in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= {*ordered, n}]
        if not ready:  # a cycle of foreign keys: keep the rest in name order
            ready = [n for n in names if n not in ordered]
        ordered.extend(ready)
    return ordered


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        # PostgreSQL's text cannot hold NUL: it is stored as U+FFFD (csms.db.postgres)
        return a.replace("\x00", "\ufffd") == b.replace("\x00", "\ufffd")
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


async def copy_database(
    source_path: Path,
    target: Database,
    components: dict[str, str],
    progress: Callable[[str, int, int], None] = lambda table, copied, total: None,
) -> CopyReport:
    """Copy every row of the SQLite database at ``source_path`` into ``target`` (not open).
    ``components`` maps each component to its migrations package (csms's and extensions')."""
    if not await asyncio.to_thread(source_path.is_file):
        raise CopyError(f"no SQLite database at {source_path}")
    source = SqliteDatabase(source_path, "NORMAL")
    for name, package in components.items():
        source.add_migrations(name, package)
        target.add_migrations(name, package)
    await source.open()
    try:
        await target.open()
        try:
            return await _copy(source, source_path, target, progress)
        finally:
            await target.close()
    finally:
        await source.close()


async def _copy(
    source: Database,
    source_path: Path,
    target: Database,
    progress: Callable[[str, int, int], None],
) -> CopyReport:
    versions = await source.schema_versions(), await target.schema_versions()
    if versions[0] != versions[1]:
        raise CopyError(f"schema versions differ: source {versions[0]}, target {versions[1]}")
    conn = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    try:
        tables = _tables_in_order(conn)
        columns = {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}
        odd = [f"{t}.{c}" for t, cols in columns.items() for c in cols if not _NAME.match(c)]
        if odd:
            raise CopyError(f"the source has columns csms does not make: {odd[:5]!r}")
    finally:
        conn.close()
    for t in tables:
        row = await target.read_one(f'SELECT 1 AS x FROM "{t}" LIMIT 1')
        if row is not None:
            raise CopyError(f"the target already holds data (table {t}): copy into an empty one")
    report = CopyReport()
    for t in tables:
        cols = columns[t]
        names = ", ".join(f'"{c}"' for c in cols)
        insert = f'INSERT INTO "{t}" ({names}) VALUES ({", ".join("?" * len(cols))})'
        total = await source.read_one(f'SELECT COUNT(*) AS n FROM "{t}"')
        expected = int(total["n"]) if total else 0
        after, copied = 0, 0
        while True:
            rows = await source.read(
                f'SELECT rowid AS "_rowid_", {names} FROM "{t}" WHERE rowid > ? '
                "ORDER BY rowid LIMIT ?",
                (after, BATCH),
            )
            if not rows:
                break
            after = rows[-1]["_rowid_"]
            batch = [tuple(r[c] for c in cols) for r in rows]

            async def job(
                tx: Tx, batch: list[tuple[Any, ...]] = batch, insert: str = insert
            ) -> None:
                await tx.executemany(insert, batch)

            await target.write(job)
            copied += len(batch)
            progress(t, copied, expected)
        report.tables[t] = copied
        if not copied:
            progress(t, 0, 0)
    if target.engine == "postgresql":
        await target.write(_move_identities)
    await _verify(source, target, tables, columns, report)
    return report


async def _move_identities(tx: Tx) -> None:
    """Identity sequences past the keys copied in, so that new rows get new keys."""
    rows = await tx.execute_fetchall(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    for r in rows:
        t, c = r["table_name"], r["column_name"]
        await tx.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{t}\"', '{c}'), "
            f'COALESCE((SELECT MAX("{c}") FROM "{t}"), 0) + 1, false)'
        )


async def _verify(
    source: Database,
    target: Database,
    tables: list[str],
    columns: dict[str, list[str]],
    report: CopyReport,
) -> None:
    for t in tables:
        a = await source.read_one(f'SELECT COUNT(*) AS n FROM "{t}"')
        b = await target.read_one(f'SELECT COUNT(*) AS n FROM "{t}"')
        na, nb = int(a["n"]) if a else 0, int(b["n"]) if b else 0
        if na != nb:
            report.mismatches.append(f"{t}: {na} rows in the source, {nb} in the target")
            continue
        if not na:
            continue
        cols = columns[t]
        key = cols[0]
        names = ", ".join(f'"{c}"' for c in cols)
        step = max(1, na // SAMPLE)
        sample = await source.read(
            f'SELECT {names} FROM (SELECT {names}, ROW_NUMBER() OVER (ORDER BY "{key}") AS k '
            f'FROM "{t}") AS s WHERE (k - 1) % ? = 0 OR k = ?',
            (step, na),
        )
        for row in sample:
            twin = await target.read(f'SELECT {names} FROM "{t}" WHERE "{key}" = ?', (row[key],))
            report.sampled += 1
            if not any(all(_same(row[c], other[c]) for c in cols) for other in twin):
                report.mismatches.append(f"{t}: row {key}={row[key]!r} differs or is missing")
                break
