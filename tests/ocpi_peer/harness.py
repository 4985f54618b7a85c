"""Drive the OCPI test peer (tests/ocpi_peer/emsp.py) from OUR pytest.

It runs in the project's venv and imports nothing from extrawest-ocpi: the peer runs as a
subprocess with .venv-peer's python (created by ``make test``) and is driven over HTTP through its
``/_control`` API.  Typical use::

    async with EmspPeer() as peer:
        await peer.register_with(cpo_versions_url, cpo_token_a)   # peer = credentials Sender
        locations = await peer.pull("locations")
        ...

or, the other way round, our CPO registers with ``peer.versions_url`` using ``peer.token_a``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

PEER_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEER_DIR.parents[1]
PEER_PROGRAM = PEER_DIR / "emsp.py"
DEFAULT_PEER_VENV = REPO_ROOT / ".venv-peer"


class PeerError(RuntimeError):
    """The peer could not be started, died, or its control API answered an error."""


class PeerVenvMissing(PeerError):
    """The peer's own virtual environment does not exist."""


def peer_python() -> Path:
    """The python of the peer venv (``OCPI_PEER_PYTHON`` overrides); raises when missing."""
    override = os.environ.get("OCPI_PEER_PYTHON")
    python = Path(override) if override else DEFAULT_PEER_VENV / "bin" / "python"
    if not python.exists():
        raise PeerVenvMissing(
            f"the OCPI test peer needs its own virtual environment ({python} not found). "
            "`make test` creates it (python3 -m venv .venv-peer && .venv-peer/bin/pip install "
            "-r tests/ocpi_peer/requirements.txt); or set OCPI_PEER_PYTHON to its python."
        )
    return python


class EmspPeer:
    """An extrawest-ocpi eMSP peer in a subprocess, with bounded start/stop and a control client.

    Every method that talks to the peer is a coroutine and has a bounded wait
    (``control_timeout`` for control calls; the peer's own outgoing requests time out after
    ``http_timeout``).
    """

    def __init__(
        self,
        *,
        party_id: str = "EMS",
        country_code: str = "PT",
        token_a: str | None = None,
        role: str = "EMSP",
        versions: tuple[str, ...] = ("2.2.1",),
        fix_links: bool = True,
        keep_token_a: bool = False,
        cistring_case: str = "lower",
        http_timeout: float = 10.0,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        control_timeout: float = 60.0,
        debug: bool = False,
        log_path: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """``tls``: (certificate chain, key): the peer serves https; ``ca_file``: the CA
        its own calls trust (SSL_CERT_FILE, which httpx reads) and this harness's calls too."""
        self.party_id = party_id
        self.country_code = country_code
        self._token_a_arg = token_a
        self.role = role
        self.versions = versions
        self.fix_links = fix_links
        self.keep_token_a = keep_token_a
        self.cistring_case = cistring_case
        self.http_timeout = http_timeout
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.control_timeout = control_timeout
        self.debug = debug
        self.log_path = log_path
        self.tls = tls
        self.ca_file = ca_file
        self.info: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: Any = None
        self._drain: asyncio.Task[None] | None = None
        self._saved_log = ""

    # ---- life cycle -------------------------------------------------------------------------
    async def __aenter__(self) -> EmspPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def command_line(self, python: Path) -> list[str]:
        args = [
            str(python),
            str(PEER_PROGRAM),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--party-id",
            self.party_id,
            "--country-code",
            self.country_code,
            "--role",
            self.role,
            "--versions",
            ",".join(self.versions),
            "--cistring-case",
            self.cistring_case,
            "--http-timeout",
            str(self.http_timeout),
            "--fix-links" if self.fix_links else "--no-fix-links",
        ]
        if self._token_a_arg:
            args += ["--token-a", self._token_a_arg]
        if self.keep_token_a:
            args.append("--keep-token-a")
        if self.debug:
            args.append("--debug")
        if self.tls is not None:
            args += ["--ssl-certfile", str(self.tls[0]), "--ssl-keyfile", str(self.tls[1])]
        return args

    async def start(self) -> EmspPeer:
        python = peer_python()
        # A fresh empty working directory: the library reads a .env file from its cwd.
        self._workdir = tempfile.TemporaryDirectory(prefix="ocpi-peer-")
        if self.log_path is None:
            self.log_path = Path(self._workdir.name) / "peer.log"
        self._log_file = self._open_log(self.log_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONUNBUFFERED"] = "1"
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
        self._proc = await asyncio.create_subprocess_exec(
            *self.command_line(python),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log_file,
            cwd=self._workdir.name,
            env=env,
            start_new_session=True,
        )
        try:
            self.info = await asyncio.wait_for(self._read_ready(), self.startup_timeout)
        except TimeoutError:
            await self.stop()
            raise PeerError(
                f"the OCPI peer did not get ready within {self.startup_timeout}s; "
                f"log tail:\n{self.log_tail()}"
            ) from None
        except BaseException:
            await self.stop()
            raise
        self._drain = asyncio.create_task(self._drain_stdout())
        connector = None
        if self.ca_file is not None:
            connector = aiohttp.TCPConnector(
                ssl=ssl.create_default_context(cafile=str(self.ca_file))
            )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.control_timeout), connector=connector
        )
        return self

    @staticmethod
    def _open_log(path: Path) -> Any:
        return path.open("wb")  # closed in stop()

    async def _read_ready(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                code = await self._proc.wait()
                raise PeerError(
                    f"the OCPI peer exited with code {code} before it was ready; "
                    f"log tail:\n{self.log_tail()}"
                )
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("event") == "ready":
                    return message

    async def _drain_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with contextlib.suppress(Exception):
            while await self._proc.stdout.readline():
                pass

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; idempotent."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain
            self._drain = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            if self.log_path is not None and self.log_path.parent == Path(self._workdir.name):
                self._saved_log = self.log_tail(200)
            self._workdir.cleanup()
            self._workdir = None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is not None and self.log_path.exists():
            text = self.log_path.read_text("utf-8", "replace")
            return "\n".join(text.splitlines()[-lines:])
        return self._saved_log

    # ---- what the ready line said -----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def versions_url(self) -> str:
        return self.info["versions_url"]

    @property
    def details_url(self) -> str:
        return self.info["details_urls"][self.versions[0]]

    @property
    def token_a(self) -> str:
        return self.info["token_a"]

    @property
    def grant(self) -> dict[str, Any]:
        """What a CPO grants this peer when it makes its token A (its own role and party):
        the body of ``POST /api/v1/ocpi/token-a``."""
        return {"role": self.role, "parties": [f"{self.country_code}/{self.party_id}"]}

    @property
    def port(self) -> int:
        return self.info["port"]

    # ---- control API ------------------------------------------------------------------------
    async def control(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        if self._session is None:
            raise PeerError("the peer is not running")
        url = f"{self.base_url}/_control/{path.lstrip('/')}"
        try:
            async with self._session.request(method, url, json=body, params=params) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PeerError(
                f"control {method} {path} failed: {exc!r}; log tail:\n{self.log_tail()}"
            ) from exc
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        if status >= 300:
            raise PeerError(f"control {method} {path} -> HTTP {status}: {data}")
        return data

    async def state(self) -> dict[str, Any]:
        """Token A list, pending tokens and the connections with CPOs (see README)."""
        return await self.control("GET", "state")

    async def requests(
        self, *, method: str | None = None, path: str | None = None, since: int = 0
    ) -> list[dict[str, Any]]:
        """Requests the peer RECEIVED (method, path, query, headers, body, findings, response)."""
        params: dict[str, Any] = {"since": since}
        if method:
            params["method"] = method
        if path:
            params["path"] = path
        return (await self.control("GET", "requests", params=params))["requests"]

    async def clear_requests(self) -> None:
        await self.control("DELETE", "requests")

    async def outgoing(self, *, since: int = 0) -> list[dict[str, Any]]:
        """Requests the peer SENT (ours and the library's own), with the responses."""
        return (await self.control("GET", "outgoing", params={"since": since}))["outgoing"]

    async def objects(self, module: str, *, deleted: bool = False) -> list[dict[str, Any]]:
        """Stored records of locations/sessions/cdrs/tariffs/tokens: each has "object" (the
        library's view after validation), "key" and "writes" (raw bodies that wrote it)."""
        params = {"deleted": "1"} if deleted else None
        return (await self.control("GET", f"objects/{module}", params=params))["objects"]

    async def object(self, module: str, object_id: str) -> dict[str, Any] | None:
        """The library's stored view of one object, found by id/uid case-insensitively."""
        for record in await self.objects(module):
            obj = record["object"]
            if str(obj.get("id", obj.get("uid", ""))).lower() == object_id.lower():
                return obj
        return None

    async def wait_for_request(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> dict[str, Any]:
        """Poll the received requests until one matches (bounded by ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for record in await self.requests():
                if predicate(record):
                    return record
            if loop.time() >= deadline:
                raise PeerError(f"no matching request reached the peer within {timeout}s")
            await asyncio.sleep(interval)

    async def new_token_a(self, token: str | None = None) -> str:
        """Make the peer accept one more credentials token A (for another registration)."""
        return (await self.control("POST", "token-a", {"token": token}))["token"]

    async def seed_tokens(self, tokens: list[dict[str, Any]]) -> dict[str, Any]:
        """Put Tokens in the peer's own store (served by its tokens Sender GET)."""
        return await self.control("POST", "tokens", {"tokens": tokens})

    # ---- the peer as a client of the CPO ----------------------------------------------------
    async def register_with(
        self,
        versions_url: str,
        token_a: str,
        *,
        version: str | None = None,
        token_b: str | None = None,
        auth: str = "auto",
        check: bool = True,
    ) -> dict[str, Any]:
        """The peer as credentials Sender: GET versions, GET details, POST its credentials (with
        a new token B) using ``token_a``; keeps the token C the CPO answers."""
        result = await self.control(
            "POST",
            "register",
            {
                "versions_url": versions_url,
                "token_a": token_a,
                "version": version,
                "token_b": token_b,
                "auth": auth,
            },
        )
        if check and not result["ok"]:
            raise PeerError(f"registration failed: {result['error']}: {_short(result)}")
        return result

    async def pull(
        self,
        module: str,
        *,
        max_pages: int = 100,
        validate: bool = True,
        url: str | None = None,
        headers: dict[str, str | None] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """GET a Sender module of the CPO following Link rel=next: returns ``objects``,
        ``pages`` (raw exchanges with headers), ``validation_errors`` (library models),
        ``findings`` and ``ok``.  Query parameters: date_from=..., limit=..., etc."""
        return await self.control(
            "POST",
            "pull",
            {
                "module": module,
                "params": params,
                "max_pages": max_pages,
                "validate": validate,
                "url": url,
                "headers": headers,
            },
        )

    async def call(
        self,
        method: str,
        *,
        module: str | None = None,
        path: str = "",
        url: str | None = None,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str | None] | None = None,
        auth: str = "auto",
        token: str | None = None,
        role: str | None = None,
        routing: bool | None = None,
    ) -> dict[str, Any]:
        """Any OCPI request to the CPO with the peer's headers and current token.  ``module`` +
        ``path`` are joined to the advertised endpoint with one slash; ``headers`` values of None
        remove a default header; ``auth`` is auto/base64/raw."""
        return await self.control(
            "POST",
            "call",
            {
                "method": method,
                "module": module,
                "path": path,
                "url": url,
                "json": json_body,
                "params": params,
                "headers": headers,
                "auth": auth,
                "token": token,
                "role": role,
                "routing": routing,
            },
        )

    async def push_token(
        self,
        token: dict[str, Any],
        *,
        method: str = "PUT",
        uid: str | None = None,
        token_type: str | None = None,
        validate: bool = True,
        via: str = "direct",
        headers: dict[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """PUT a full Token (or PATCH a partial one) to the CPO's tokens Receiver.  With
        ``via="library"`` the library's own push client sends it (no X-Request-ID, no routing
        headers, CiStrings lower-cased)."""
        body: dict[str, Any] = {
            "token": token,
            "method": method,
            "validate": validate,
            "via": via,
            "headers": headers,
        }
        if uid:
            body["uid"] = uid
        if token_type:
            body["type"] = token_type
        return await self.control("POST", "push-token", body)

    async def send_command(
        self,
        command: str,
        body: dict[str, Any],
        *,
        validate: bool = True,
        headers: dict[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """POST a command (START_SESSION ...) with a response_url pointing at the peer; returns
        ``uid``, ``response_url``, ``command_response`` and the raw ``exchange``."""
        return await self.control(
            "POST",
            "commands",
            {"command": command, "body": body, "validate": validate, "headers": headers},
        )

    async def command_results(self) -> dict[str, dict[str, Any]]:
        """Every command (by uid) with the CommandResults POSTed to its response_url."""
        commands = (await self.control("GET", "commands"))["commands"]
        return {c["uid"]: c for c in commands}

    async def wait_for_command_result(
        self, uid: str, *, timeout: float = 10.0, interval: float = 0.05
    ) -> dict[str, Any]:
        """The first CommandResult received for ``uid`` (bounded by ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            entry = await self.control("GET", f"commands/{uid}")
            if entry["results"]:
                return entry["results"][0]
            if loop.time() >= deadline:
                raise PeerError(f"no CommandResult for {uid} within {timeout}s")
            await asyncio.sleep(interval)

    async def get_credentials(self, **kw: Any) -> dict[str, Any]:
        """GET the CPO's credentials endpoint with the current token."""
        return await self.control("POST", "credentials/get", kw)

    async def renew_credentials(self, token_b: str | None = None, **kw: Any) -> dict[str, Any]:
        """PUT new credentials (new token B) to the CPO; keeps the new token C it answers."""
        return await self.control("POST", "credentials/renew", {"token_b": token_b, **kw})

    async def unregister(self, **kw: Any) -> dict[str, Any]:
        """DELETE on the CPO's credentials endpoint; forgets the connection on success."""
        return await self.control("POST", "credentials/delete", kw)


def _short(result: dict[str, Any]) -> str:
    steps = result.get("steps") or []
    last = steps[-1] if steps else {}
    return json.dumps({"last_step": last}, default=str)[:2000]


if __name__ == "__main__":  # manual smoke run: python -m tests.ocpi_peer.harness

    async def _smoke() -> None:
        async with EmspPeer() as peer:
            print(json.dumps(peer.info, indent=2))

    asyncio.run(_smoke())
    sys.exit(0)
