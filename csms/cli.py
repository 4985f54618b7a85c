"""``csms``: the command line of the central system.

csms run --config FILE            run everything in one process until SIGTERM/SIGINT
csms check-config --config FILE   validate a configuration file and exit
csms check --config FILE          the same, then the database: engine, schema versions
csms migrate --config FILE        apply the database migrations and print the versions
csms db copy --config FILE --to postgresql://...
                                  copy the SQLite database, every row, into PostgreSQL
csms hash-password                print a hash for api.admin_password_hash
csms pki init|server-cert|station-cert ...
                                  the CA, server and station certificates for TLS
csms user add|list|remove ...     web interface users (in the database)
csms <extension> ...              commands of installed extensions (e.g. csms ocpi)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from . import certtool
from .app import CentralSystem, DataDirError, prepare_data_dir, resolve_admin_password, run
from .config import ConfigError, Settings, load_settings
from .db import Database, DatabaseError, redact_url
from .db.base import migrations
from .db.postgres import PostgresDatabase
from .db.sqlite import SqliteDatabase
from .dbcopy import copy_database
from .extensions import Extension, discover
from .logs import configure_logging
from .passwords import hash_password
from .tls import ServerTls, TlsConfigError, configure_client
from .web import users as web_users

EXIT_CONFIG = 2


def _parser(extensions: list[Extension]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csms", description="OCPP 1.6J central system")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the central system")
    run.add_argument("--config", "-c", required=True, help="TOML configuration file")
    run.add_argument(
        "--role",
        choices=("auto", "all", "ocpp", "delivery"),
        default="auto",
        help="auto (default): the OCPP node here, the extensions' delivery (OCPI pushes) in "
        "a child process on another core; all: everything in this one process (SQLite only); on "
        "PostgreSQL, ocpp: an OCPP node only, and delivery: a delivery worker (one of them "
        "delivers, the others stand by)",
    )
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", "-c", required=True)
    full = sub.add_parser(
        "check", help="validate a configuration file, then show its database and schema"
    )
    full.add_argument("--config", "-c", required=True)
    migrate = sub.add_parser("migrate", help="apply the database migrations and exit")
    migrate.add_argument("--config", "-c", required=True)
    db = sub.add_parser("db", help="database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    copy = db_sub.add_parser(
        "copy",
        help="copy an installation's SQLite database, every row, into an empty PostgreSQL one",
    )
    copy.add_argument("--config", "-c", required=True, help="TOML configuration file")
    copy.add_argument(
        "--from",
        dest="source",
        help="sqlite:PATH (default: the SQLite file in the configuration's data_dir)",
    )
    copy.add_argument(
        "--to",
        dest="target",
        help="postgresql://... (default: database.url or CSMS_DATABASE__URL, which keeps "
        "the password off the command line)",
    )
    hp = sub.add_parser("hash-password", help="hash a password for the configuration file")
    hp.add_argument("--stdin", action="store_true", help="read the password from stdin")
    web_users.add_commands(sub)
    certtool.add_commands(sub)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", required=True, help="TOML configuration file")
    for ext in extensions:
        ext.add_commands(sub.add_parser(ext.name, help=f"{ext.name} commands"), common)
    return parser


def _hash_password(args: argparse.Namespace) -> int:
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("csms: the passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("csms: use at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _check_database_file(settings: Settings) -> None:
    """The database (and its directory, when it is not the data directory) must be
    writable: SQLite would otherwise fail at the first write, long after the start."""
    if settings.database.url:
        return  # PostgreSQL: the server answers for itself at start
    db = settings.database_path
    if not db.parent.is_dir():
        return  # the store makes it (0700) at start
    if not os.access(db.parent, os.W_OK | os.X_OK):
        raise DataDirError(f"database directory {db.parent} is not writable")
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise DataDirError(f"database {db} is not writable")


def load_with_extensions(
    path: str, extensions: list[Extension]
) -> tuple[Settings, list[tuple[Extension, Any]]]:
    """Load the configuration and let each extension validate its own section."""
    settings = load_settings(path, extensions=[e.name for e in extensions])
    configured = [
        (e, e.validate_config(settings.extension_section(e.name), settings)) for e in extensions
    ]
    return settings, configured


# ---------------------------------------------------------------------- the database


def _unserved_system(settings: Settings, configured: list[tuple[Extension, Any]]) -> CentralSystem:
    """A central system that is never started: its store, with every component's
    migrations (extensions register theirs when they attach)."""
    # its HTTP app is built but never served: any valid hash does
    password_hash = settings.api.admin_password_hash or hash_password(secrets.token_urlsafe())
    return CentralSystem(settings, admin_password_hash=password_hash, extensions=configured)


def _where(settings: Settings, db: Database) -> str:
    """The engine and where its data is, without a password."""
    if isinstance(db, PostgresDatabase):
        return f"postgresql {redact_url(db.url)}"
    if isinstance(db, SqliteDatabase):
        return f"sqlite {db.path}"
    return f"{db.engine} {redact_url(settings.database.url or '')}"


def _sqlite_versions(db: SqliteDatabase) -> dict[str, int] | None:
    """The versions in a SQLite file, read only (None: no file yet)."""
    if not db.path.is_file():
        return None
    conn = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True)
    try:
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone():
            return {}
        rows = conn.execute(
            "SELECT component, MAX(version) FROM schema_migrations GROUP BY component"
        ).fetchall()
    finally:
        conn.close()
    return {str(c): int(v) for c, v in rows}


async def _postgres_versions(db: PostgresDatabase) -> dict[str, int]:
    conn = await asyncpg.connect(db.url, timeout=10)
    try:
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return {}
        rows = await conn.fetch(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
    finally:
        await conn.close()
    return {r["component"]: int(r["v"]) for r in rows}


async def _check_database(settings: Settings, configured: list[tuple[Extension, Any]]) -> int:
    """Print the engine and each component's schema version, changing nothing."""
    system = _unserved_system(settings, configured)
    db = system.store.db
    print(f"database: {_where(settings, db)}")
    try:
        if isinstance(db, PostgresDatabase):
            applied: dict[str, int] | None = await _postgres_versions(db)
        elif isinstance(db, SqliteDatabase):
            applied = await asyncio.to_thread(_sqlite_versions, db)
        else:
            raise DatabaseError(f"no check for the {db.engine} engine")
    except (OSError, sqlite3.Error, asyncpg.PostgresError, DatabaseError) as e:
        print(f"csms: cannot read the database: {e}", file=sys.stderr)
        return 1
    if applied is None:
        print("schema: no database yet (made at the first start, or by `csms migrate`)")
        return 0
    for component, package in sorted(db.components.items()):
        known = max((v for v, _, _ in migrations(package, db.engine)), default=0)
        have = applied.get(component, 0)
        pending = f", {known - have} to apply: csms migrate" if have < known else ""
        print(f"schema {component}: version {have} of {known}{pending}")
    return 0


async def _migrate(settings: Settings, configured: list[tuple[Extension, Any]]) -> int:
    """Apply every component's migrations; print the versions."""
    system = _unserved_system(settings, configured)
    print(f"database: {_where(settings, system.store.db)}")
    try:
        await system.store.open()
    except (OSError, sqlite3.Error, DatabaseError) as e:
        print(f"csms: cannot migrate the database: {e}", file=sys.stderr)
        return 1
    try:
        versions = await system.store.schema_versions()
    finally:
        await system.store.close()
    for component, version in sorted(versions.items()):
        print(f"schema {component}: version {version}")
    return 0


class _Progress:
    """One line per table when it is done, and one every few seconds on a long table."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.last = 0.0

    def __call__(self, table: str, copied: int, total: int) -> None:
        now = time.monotonic()
        if copied >= total or now - self.last >= self.every:
            self.last = now
            print(f"  {table}: {copied} of {total} rows", file=sys.stderr, flush=True)


def _copy_endpoints(args: argparse.Namespace, settings: Settings) -> tuple[Path, str]:
    source = args.source or f"sqlite:{settings.database_path}"
    if not source.startswith("sqlite:"):
        raise ConfigError(f"--from must be sqlite:PATH, not {redact_url(source)}")
    target = args.target or settings.database.url or ""
    if not target.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "--to must be a postgresql:// URL (or give it as database.url / CSMS_DATABASE__URL)"
        )
    return Path(source.removeprefix("sqlite:")).expanduser(), target


async def _copy(
    args: argparse.Namespace, settings: Settings, configured: list[tuple[Extension, Any]]
) -> int:
    """``csms db copy``: every row of the SQLite file into an empty PostgreSQL database,
    then counts and a sample compared."""
    source, target_url = _copy_endpoints(args, settings)
    components = _unserved_system(settings, configured).store.db.components
    target = PostgresDatabase(target_url)
    print(f"copying sqlite {source} into postgresql {redact_url(target_url)}", file=sys.stderr)
    try:
        report = await copy_database(source, target, dict(components), _Progress())
    except (OSError, sqlite3.Error, asyncpg.PostgresError, DatabaseError) as e:
        print(f"csms: the copy failed: {e}", file=sys.stderr)
        return 1
    rows = sum(report.tables.values())
    print(f"copied {rows} rows in {len(report.tables)} tables")
    if not report.ok:
        for line in report.mismatches:
            print(f"csms: mismatch: {line}", file=sys.stderr)
        print("csms: the copy differs from the source: do not switch to it", file=sys.stderr)
        return 1
    print(f"verified: every table's row count, and {report.sampled} sampled rows value by value")
    return 0


def main(argv: list[str] | None = None) -> int:
    extensions = discover()
    args = _parser(extensions).parse_args(argv)
    if args.command == "hash-password":
        return _hash_password(args)
    if args.command == "pki":
        return certtool.main(args)

    try:
        settings, configured = load_with_extensions(args.config, extensions)
        configure_logging(settings.logging.level, settings.logging.format)
        if args.command in ("run", "migrate"):
            try:
                prepare_data_dir(settings.data_dir)
                _check_database_file(settings)
            except DataDirError as e:
                print(f"csms: {e}", file=sys.stderr)
                return EXIT_CONFIG
        if args.command == "run" and args.role != "delivery":
            resolve_admin_password(settings)  # fail on a bad hash before anything starts
        if args.command in ("check-config", "check", "run"):
            # the TLS files: present, readable, a key that matches its certificate
            ServerTls(settings)
            configure_client(settings)
    except (ConfigError, TlsConfigError) as e:
        print(f"csms: configuration error in {args.config}:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command in ("check-config", "check"):
        print(f"{args.config}: OK")
        if args.command == "check-config":
            return 0
        return asyncio.run(_check_database(settings, configured))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, configured))
    if args.command == "db":
        try:
            return asyncio.run(_copy(args, settings, configured))
        except ConfigError as e:
            print(f"csms: {e}", file=sys.stderr)
            return EXIT_CONFIG
        except KeyboardInterrupt:
            return 130
    if args.command == "run":
        try:
            return asyncio.run(run(settings, configured, args.role, Path(args.config)))
        except KeyboardInterrupt:
            return 0
    if args.command == "user":
        try:
            return asyncio.run(web_users.run(args, settings))
        except KeyboardInterrupt:
            return 130
    ext = next(e for e in extensions if e.name == args.command)
    try:
        return asyncio.run(ext.run_command(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
