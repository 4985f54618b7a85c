"""``csms``: the command line of the central system.

csms run --config FILE       run everything in one process until SIGTERM/SIGINT
csms check-config --config FILE
csms hash-password           print a hash for api.admin_password_hash
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from .config import ConfigError, load_settings
from .logs import configure_logging
from .passwords import hash_password

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="csms", description="OCPP 1.6J central system")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the central system")
    run.add_argument("--config", "-c", required=True, help="TOML configuration file")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", "-c", required=True)
    hp = sub.add_parser("hash-password", help="hash a password for the configuration file")
    hp.add_argument("--stdin", action="store_true", help="read the password from stdin")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-password":
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

    try:
        settings = load_settings(args.config)
        if args.command == "run":
            from .app import resolve_admin_password

            configure_logging(settings.logging.level, settings.logging.format)
            resolve_admin_password(settings)  # fail on a bad hash before anything starts
    except ConfigError as e:
        print(f"csms: configuration error in {args.config}:\n{e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: OK")
        return 0

    from .app import run

    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
