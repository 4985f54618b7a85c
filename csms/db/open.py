"""Which engine a configuration names."""

from __future__ import annotations

from pathlib import Path

from .base import Database, DatabaseError
from .postgres import PostgresDatabase
from .sqlite import SqliteDatabase

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_database(url: str | None, sqlite_path: Path, synchronous: str = "FULL") -> Database:
    """PostgreSQL when ``url`` names it, else SQLite at ``sqlite_path`` (the default).
    ``sqlite:PATH`` names another SQLite file. Not yet opened."""
    if not url:
        return SqliteDatabase(sqlite_path, synchronous)
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresDatabase(url)
    if url.startswith("sqlite:"):
        return SqliteDatabase(Path(url.removeprefix("sqlite:").removeprefix("//")), synchronous)
    raise DatabaseError(
        "database.url must start with postgresql:// (or sqlite:PATH); "
        f"got one starting {url.split(':', 1)[0]!r}"
    )
