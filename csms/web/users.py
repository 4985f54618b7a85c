"""``csms user add|list|remove``: web interface users kept in the database.

They work whether or not the central system runs (SQLite in WAL mode; the running process
sees a new user at its next login). Users given in the configuration (``[[web.users]]``)
are listed too but are changed in the configuration file.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from typing import TextIO

from ..clock import SystemClock
from ..config import Settings
from ..passwords import hash_password
from ..store import JobDb, Store
from ..timeparse import to_db
from .auth import ROLES

NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 8


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="TOML configuration file")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``csms user ...`` to the ``csms`` parser."""
    user = sub.add_parser("user", help="web interface users (add, list, remove)")
    us = user.add_subparsers(dest="user_command", required=True)
    add = us.add_parser("add", help="add a user; asks for the password twice")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    _config_option(add)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (scripts)"
    )
    add.add_argument(
        "--update", action="store_true", help="replace an existing user's role and password"
    )
    ls = us.add_parser("list", help="list the users")
    _config_option(ls)
    rm = us.add_parser("remove", help="remove a user and end its sessions")
    rm.add_argument("name")
    _config_option(rm)


def _read_password(from_stdin: bool, stdin: TextIO, err: TextIO) -> str | None:
    if from_stdin:
        return stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        print("csms: the passwords differ", file=err)
        return None
    return password


async def run(
    args: argparse.Namespace,
    settings: Settings,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Run ``csms user <command>``; returns the exit code."""
    configured = {u.name: u.role for u in settings.web.users}
    if args.user_command == "add":
        if not NAME.match(args.name):
            print("csms: a user name is 1 to 64 letters, digits or . _ @ -", file=err)
            return 2
        if args.name in configured:
            print(
                f"csms: {args.name} is defined in the configuration file; change it there", file=err
            )
            return 1
        password = _read_password(args.password_stdin, stdin, err)
        if password is None:
            return 1
        if len(password) < MIN_PASSWORD:
            print(f"csms: use at least {MIN_PASSWORD} characters", file=err)
            return 1
        encoded = hash_password(password)
    store = Store.for_settings(settings, SystemClock())
    await store.open()
    try:
        if args.user_command == "add":
            now = to_db(store.clock.now())

            async def add(db: JobDb) -> bool:
                rows = await db.execute_fetchall(
                    "SELECT 1 FROM web_users WHERE name = ?", (args.name,)
                )
                if rows and not args.update:
                    return False
                await db.execute(
                    "INSERT INTO web_users (name, role, password_hash, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                    "password_hash = excluded.password_hash, updated_at = excluded.updated_at",
                    (args.name, args.role, encoded, now, now),
                )
                # a new password ends the sessions opened with the old one
                await db.execute("DELETE FROM web_sessions WHERE user_name = ?", (args.name,))
                return True

            if not await store.write(add):
                print(f"csms: user {args.name} exists (use --update to replace it)", file=err)
                return 1
            print(f"user {args.name} ({args.role}) saved", file=out)
            return 0
        if args.user_command == "list":
            rows = await store.read("SELECT name, role, created_at FROM web_users ORDER BY name")
            for name, role in sorted(configured.items()):
                print(f"{name}\t{role}\tconfiguration", file=out)
            for r in rows:
                if r["name"] not in configured:
                    print(f"{r['name']}\t{r['role']}\tdatabase", file=out)
            return 0
        # remove
        if args.name in configured:
            print(
                f"csms: {args.name} is defined in the configuration file; remove it there", file=err
            )
            return 1

        async def remove(db: JobDb) -> bool:
            cur = await db.execute("DELETE FROM web_users WHERE name = ?", (args.name,))
            await db.execute("DELETE FROM web_sessions WHERE user_name = ?", (args.name,))
            return cur.rowcount > 0

        if not await store.write(remove):
            print(f"csms: no user {args.name}", file=err)
            return 1
        print(f"user {args.name} removed", file=out)
        return 0
    finally:
        await store.close()
