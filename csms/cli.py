"""``csms``: the command line of the central system.

csms run --config FILE            run everything in one process until SIGTERM/SIGINT
csms check-config --config FILE   validate a configuration file and exit
csms hash-password                print a hash for api.admin_password_hash
csms user add|list|remove ...     web interface users (in the database)
csms <extension> ...              commands of installed extensions (e.g. csms ocpi)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from .config import ConfigError, Settings, load_settings
from .extensions import Extension, discover
from .logs import configure_logging
from .passwords import hash_password
from .web import users as web_users

EXIT_CONFIG = 2


def _parser(extensions: list[Extension]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csms", description="OCPP 1.6J central system")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the central system")
    run.add_argument("--config", "-c", required=True, help="TOML configuration file")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", "-c", required=True)
    hp = sub.add_parser("hash-password", help="hash a password for the configuration file")
    hp.add_argument("--stdin", action="store_true", help="read the password from stdin")
    web_users.add_commands(sub)
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
    import os

    from .app import DataDirError

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


def main(argv: list[str] | None = None) -> int:
    extensions = discover()
    args = _parser(extensions).parse_args(argv)
    if args.command == "hash-password":
        return _hash_password(args)

    try:
        settings, configured = load_with_extensions(args.config, extensions)
        configure_logging(settings.logging.level, settings.logging.format)
        if args.command == "run":
            from .app import DataDirError, prepare_data_dir, resolve_admin_password

            try:
                prepare_data_dir(settings.data_dir)
                _check_database_file(settings)
            except DataDirError as e:
                print(f"csms: {e}", file=sys.stderr)
                return EXIT_CONFIG
            resolve_admin_password(settings)  # fail on a bad hash before anything starts
    except ConfigError as e:
        print(f"csms: configuration error in {args.config}:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: OK")
        return 0
    if args.command == "run":
        from .app import run

        try:
            return asyncio.run(run(settings, configured))
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
