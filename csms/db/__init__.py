"""The database engines behind csms's store: SQLite (the embedded default) and PostgreSQL.

Both offer the same small interface, :class:`Database`:

- ``write(job)``: a *job* is an async function of a :class:`Tx` (the writer's connection).
  The writer runs every job waiting in its queue inside one transaction, each job in its own
  savepoint, commits once, and only then tells each caller its result (group commit): a
  request is answered only after what it says is committed.
- ``read(sql, params)`` / ``read_one``: committed data, as dicts.
- ``add_migrations(component, package)``: each component (csms, the OCPI bridge) versions its
  own tables with ``NNNN_name.sql`` files, one set per engine, in ``<package>.sqlite`` and
  ``<package>.postgresql``.

SQL is written once for both engines with ``?`` placeholders (PostgreSQL gets them numbered).
What differs between the two dialects is confined to :class:`Dialect`; everything else is the
common subset:

- ``INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE``, never ``INSERT OR IGNORE/REPLACE``;
- ``INSERT ... RETURNING id`` for a generated key, never ``lastrowid``;
- ``COLLATE NOCASE`` for case-insensitive equality (PostgreSQL has a ``nocase`` collation,
  ICU, nondeterministic, made by the first migration); LIKE through ``Dialect.ilike``;
- JSON through ``Dialect.json_text`` / ``Dialect.json_values``; booleans as integers 0/1;
  times as ISO-8601 text (``timeparse.to_db``), so both engines compare them as text;
- parameters of the column's own type (PostgreSQL refuses a str for an INTEGER);
- every non-aggregated column of a grouped query in its GROUP BY.
"""

from __future__ import annotations

from .base import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Dialect,
    IntegrityError,
    Job,
    JobSuspended,
    Tx,
    TxCursor,
    redact_url,
)
from .open import open_database

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "Dialect",
    "IntegrityError",
    "Job",
    "JobSuspended",
    "Tx",
    "TxCursor",
    "open_database",
    "redact_url",
]
