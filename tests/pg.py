"""A throwaway PostgreSQL server for the tests and the benchmark.

:class:`PgServer` makes a cluster in a temporary directory with Debian's binaries, on
127.0.0.1 and a free port, tuned for speed (no fsync: the data is thrown away) unless it is
asked to be durable (the benchmark), and deletes it at exit. With ``CSMS_TEST_POSTGRES_URL``
(the admin URL of an existing server allowed to CREATE DATABASE) it uses that server instead
and starts nothing.

initdb refuses to run as root: as root the cluster belongs to ``nobody``.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

URL_ENV = "CSMS_TEST_POSTGRES_URL"
# read once, at import: tests/conftest.py then removes it from the environment, where csms's
# own settings (every CSMS_* variable) would take it for an unknown key
EXTERNAL_URL = os.environ.get(URL_ENV) or None
# the suite runs tests one at a time, but a daemon and its readers hold several connections
# each and a dropped database's connections linger briefly
MAX_CONNECTIONS = 200
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


# waits for end of file on stdin, then: pg_ctl stop -m immediate, and the directory deleted
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
directory, command = sys.argv[1], sys.argv[2:]
subprocess.run([*command, "-D", directory + "/data", "-m", "immediate", "-w", "stop"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, cwd="/")
shutil.rmtree(directory, ignore_errors=True)
"""


def find_bindir() -> Path:
    """The newest Debian PostgreSQL's binaries (``/usr/lib/postgresql/<major>/bin``)."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        major = Path(d).parent.name
        if major.isdigit() and (Path(d) / "initdb").exists():
            found.append((int(major), Path(d)))
    if not found:
        raise RuntimeError(
            "PostgreSQL's binaries are missing (/usr/lib/postgresql/*/bin): "
            "apt-get install postgresql, or set " + URL_ENV
        )
    return max(found)[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote_ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


class PgServer:
    """One PostgreSQL server: ours (started, then stopped and deleted) or the one
    ``CSMS_TEST_POSTGRES_URL`` names."""

    def __init__(
        self, admin_url: str | None = None, durable: bool = False, local: bool = False
    ) -> None:
        """``durable``: fsync and synchronous commits on, as in production (the benchmark's
        figures); the tests' default is off, for speed. ``local``: a server of our own even
        when ``CSMS_TEST_POSTGRES_URL`` names one (a test that stops and starts it)."""
        self._external = None if local else (admin_url or EXTERNAL_URL)
        self._durable = durable
        self._dir: Path | None = None
        self._bindir: Path | None = None
        self._port = 0
        self._user = ""
        self._as: list[str] = []
        self._watchdog: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> PgServer:
        if self._external or self._dir is not None:
            return self
        self._bindir = find_bindir()
        self._dir = Path(tempfile.mkdtemp(prefix="csms-pg-"))
        if os.geteuid() == 0:
            # initdb refuses root: the cluster is nobody's, in a directory only it may enter
            self._user = "nobody"
            self._as = ["runuser", "-u", "nobody", "--"]
            shutil.chown(self._dir, "nobody")
        else:
            import pwd

            self._user = pwd.getpwuid(os.geteuid()).pw_name
        os.chmod(self._dir, 0o700)
        atexit.register(self.stop)
        data = self._dir / "data"
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            self._user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        # trust for 127.0.0.1 (and the socket in our private directory) only
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n", encoding="utf-8"
        )
        self._port = _free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self._port),
            "unix_socket_directories": f"'{self._dir}'",
            "max_connections": str(MAX_CONNECTIONS),
            "shared_buffers": "128MB",
            "log_min_messages": "warning",
        }
        if not self._durable:
            # a throwaway cluster: durability is worth nothing here, speed is
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with (data / "postgresql.conf").open("a", encoding="utf-8") as f:
            f.write("\n# tests/pg.py\n")
            for k, v in settings.items():
                f.write(f"{k} = {v}\n")
        self._run("pg_ctl", "-D", str(data), "-l", str(self._dir / "server.log"), "-w", "start")
        # the cluster goes when we go, even killed (no atexit then): the watchdog stops and
        # deletes it when its stdin, held by this process only, reaches end of file
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self._dir), *self._as, str(self._bin("pg_ctl"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not killed with our process group (e.g. Ctrl-C)
        )
        return self

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and delete its directory."""
        if self._dir is None:
            return
        d, self._dir = self._dir, None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.stdin is not None:
            watchdog.stdin.close()  # its cue
            try:
                watchdog.wait(60)
            except subprocess.TimeoutExpired:
                watchdog.kill()
        if (d / "data" / "postmaster.pid").exists():  # it never started, or the watchdog failed
            subprocess.run(
                [*self._as, str(self._bin("pg_ctl")), "-D", str(d / "data"), "-m", "immediate",
                 "-w", "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )  # fmt: skip
        shutil.rmtree(d, ignore_errors=True)

    def halt(self) -> None:
        """Stop our server at once, as a crash would, keeping its data (see :meth:`resume`)."""
        assert self._dir is not None, "only a server we started can be halted"
        self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again, on the same port, with its data."""
        assert self._dir is not None, "only a server we started can be resumed"
        data = self._dir / "data"
        self._run("pg_ctl", "-D", str(data), "-l", str(self._dir / "server.log"), "-w", "start")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id (None for a server we did not start)."""
        if self._dir is None:
            return None
        try:
            return int((self._dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ databases

    @property
    def admin_url(self) -> str:
        """The URL of the server's maintenance database, as a user allowed to create
        databases."""
        if self._external:
            return self._external
        if self._dir is None:
            raise RuntimeError("PgServer is not started")
        return f"postgresql://{self._user}@127.0.0.1:{self._port}/postgres"

    def url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + name))

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new empty database (a copy of ``template`` when given); its URL."""
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template:
            sql += f" TEMPLATE {_quote_ident(template)}"
        self.execute(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending whatever connections are still open to it."""
        self.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def execute(self, sql: str) -> None:
        """One statement on the maintenance database, outside any transaction (CREATE
        DATABASE refuses to run in one), from synchronous code."""
        import asyncio

        async def run() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(run())
            return
        # called from inside an event loop (an async fixture): run it in a thread of its own
        import threading

        error: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as e:
                error.append(e)

        t = threading.Thread(target=target)
        t.start()
        t.join()
        if error:
            raise error[0]

    # ------------------------------------------------------------------ helpers

    def _bin(self, name: str) -> Path:
        assert self._bindir is not None
        return self._bindir / name

    def _run(self, name: str, *args: str) -> None:
        cmd = [*self._as, str(self._bin(name)), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")
        if done.returncode != 0:
            log = ""
            if self._dir is not None and (self._dir / "server.log").exists():
                log = (self._dir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"{name} failed ({done.returncode}): {done.stdout[-1000:]}{done.stderr[-2000:]}"
                f"{log}"
            )
