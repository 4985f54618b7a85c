"""Issue 12: fuzzing the operator API of a real `csms run` over HTTP on 127.0.0.1.

Hostile query strings, path ids, bodies (deep nesting, huge and non-finite numbers, bad
UTF-8, lone surrogates, wrong types, truncation, mutations of valid bodies): the server
never answers 500, every answer of the API is JSON (errors in the standard shape), and the
server stays up. Bounded: a few hundred requests per test, well under a minute in all.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_PASSWORD, station_body

pytestmark = pytest.mark.timeout(120)

AUTH = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_API_EXAMPLES", "400")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_API_RANDOM") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Server:
    """`csms run` in a subprocess, its log in a file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "csms.log"
        config = workdir / "csms.toml"
        config.write_text(
            'data_dir = "data"\n[ocpp]\nhost = "127.0.0.1"\nport = 0\ncall_timeout = 2\n'
            '[http]\nhost = "127.0.0.1"\nport = 0\n[logging]\nformat = "json"\n'
        )
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "csms.cli", "run", "--config", str(config)],
            cwd=workdir,
            env=dict(os.environ, CSMS_ADMIN_PASSWORD=ADMIN_PASSWORD),
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
        )
        self.port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("event") == "HTTP server listening":
                    self.port = int(line["port"])
                if line.get("event") == "central system running" and self.port:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"csms did not start: {self.log_path.read_text()[-2000:]}")

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": raw.decode(errors="replace")})
        return out

    def request(
        self, method: str, path: str, body: bytes | None = None, auth: bool = True
    ) -> tuple[int, str, bytes]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = AUTH
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return resp.status, resp.getheader("Content-Type", ""), data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> int:
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.log_file.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fuzz"))
    try:
        status, _, _ = srv.request(
            "PUT", "/api/v1/stations/FZ1", json.dumps(station_body("FZ1", 2)).encode()
        )
        assert status == 201
        status, _, _ = srv.request(
            "PUT", "/api/v1/id-tags/FZTAG", json.dumps({"status": "Accepted"}).encode()
        )
        assert status == 201
        yield srv
        assert srv.proc.poll() is None, "the server died"
        status, _, body = srv.request("GET", "/healthz", auth=False)
        assert status == 200, body
        failed = [line for line in srv.lines() if line.get("event") == "API request failed"]
        assert failed == [], failed[:3]
    finally:
        code = srv.stop()
    assert code == 0


def check(srv: Server, method: str, path: str, body: bytes | None = None) -> None:
    status, ctype, data = srv.request(method, path, body)
    where = f"{method} {path[:200]} {body[:200] if body else b''!r}"
    assert status < 500, f"{status} for {where}: {data[:300]!r}"
    if len(path) > 8000:  # over aiohttp's line limit (8190): its own plain-text 4xx
        assert status >= 400, where
        return
    if status == 204:
        return
    assert ctype.startswith("application/json"), f"{ctype} for {where}"
    doc = json.loads(data)  # valid JSON: no NaN, no Infinity
    json.dumps(doc, allow_nan=False)
    if status >= 400:
        assert doc["status"] == "error", where
        assert isinstance(doc["error"], str) and isinstance(doc["message"], str), where


# ---------------------------------------------------------------------- strategies

HUGE = ["9" * 30, "-" + "9" * 30, "9223372036854775808", "-9223372036854775809", "1e999"]
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            *HUGE,
            *["", "0", "-1", "nan", "NaN", "inf", "-inf", "Infinity", "1.5", "0x10", " 5"],
            *["1_000", "true", "null", "[]", "{}", "'", '"', "\\", "%", "%00", "%ff", "é"],
            *["%ED%A0%80", "../..", "a/b", "٣", "\u202e", "\x00", "1" * 5000],
        ]
    ),
    st.integers().map(str),
)


def quote(text: str) -> str:
    # %-sequences are sent as they are (to reach the server's own decoding), the rest quoted
    if text.startswith("%") and text.isascii() and text.isprintable() and " " not in text:
        return text
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


ids = hostile_text.map(quote).filter(lambda s: s not in ("", ".", ".."))
QUERY_KEYS = ["limit", "offset", "station", "active", "since", "timeout", "x", "limit"]
queries = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), hostile_text), max_size=4).map(
    lambda pairs: "&".join(f"{k}={quote(v)}" for k, v in pairs)
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


def _mutate(doc: Any, path: list[int], value: Any) -> Any:
    """Replace the node ``path`` points at (indices taken modulo the sizes) by ``value``."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: _mutate(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _mutate(doc[i], path[1:], value), *doc[i + 1 :]]


VALID_BODIES = [
    station_body("FZ2", 2),
    {"status": "Accepted", "expiry_date": "2030-01-01T00:00:00Z", "parent_id_tag": "P1"},
    {"connectorId": 1, "idTag": "FZTAG"},
    {"type": "Soft"},
]
mutated = st.builds(
    _mutate,
    st.sampled_from(VALID_BODIES),
    st.lists(st.integers(min_value=0, max_value=50), max_size=6),
    json_values,
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "json", "mutated", "deep", "raw", "cut", "surrogate"]))
    if kind == "none":
        return None
    if kind == "json":
        return _dumps(draw(json_values))
    if kind == "mutated":
        return _dumps(draw(mutated))
    if kind == "deep":
        depth = draw(st.sampled_from([63, 64, 65, 200, 999, 1001, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "raw":
        return draw(st.binary(max_size=64))
    if kind == "cut":
        text = _dumps(draw(mutated))
        return text[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))]
    text = _dumps(draw(mutated)).decode()
    return text.replace('"', '"\\ud800', 1).encode()


ROUTES = [
    ("GET", "/api/v1/stations"),
    ("GET", "/api/v1/stations/{id}"),
    ("PUT", "/api/v1/stations/{id}"),
    ("POST", "/api/v1/stations/{id}/commands/{action}"),
    ("GET", "/api/v1/unknown-stations"),
    ("GET", "/api/v1/id-tags"),
    ("GET", "/api/v1/id-tags/{id}"),
    ("PUT", "/api/v1/id-tags/{id}"),
    ("DELETE", "/api/v1/id-tags/{id}"),
    ("GET", "/api/v1/transactions"),
    ("GET", "/api/v1/transactions/{id}"),
    ("GET", "/api/v1/transactions/{id}/meter-values"),
    ("GET", "/api/v1/commands"),
    ("GET", "/api/v1/anomalies"),
]
ACTIONS = ["Reset", "RemoteStartTransaction", "DataTransfer", "GetConfiguration", "Nope"]


# ---------------------------------------------------------------------- the suites


@FUZZ
@given(route=st.sampled_from(ROUTES), query=queries, station=st.sampled_from(["FZ1", "NOPE"]))
def test_fuzz_query_strings(
    server: Server, route: tuple[str, str], query: str, station: str
) -> None:
    method, template = route
    path = template.replace("{id}", station).replace("{action}", "Reset")
    body = b'{"status": "Accepted"}' if method in ("PUT", "POST") else None
    check(server, method, f"{path}?{query}", body)


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    ident=ids,
    action=st.one_of(st.sampled_from(ACTIONS), ids),
    query=queries,
)
def test_fuzz_path_ids(
    server: Server, route: tuple[str, str], ident: str, action: str, query: str
) -> None:
    method, template = route
    path = template.replace("{id}", ident).replace("{action}", action)
    check(server, method, f"{path}?{query}" if query else path)


@FUZZ
@given(
    route=st.sampled_from([r for r in ROUTES if r[0] in ("PUT", "POST")]),
    station=st.sampled_from(["FZ1", "FZ3"]),
    action=st.sampled_from(ACTIONS),
    body=bodies(),
)
def test_fuzz_bodies(
    server: Server, route: tuple[str, str], station: str, action: str, body: bytes | None
) -> None:
    method, template = route
    path = template.replace("{id}", station).replace("{action}", action)
    check(server, method, path, body)


def test_fuzz_left_the_server_up_and_answering(server: Server) -> None:
    status, _, body = server.request("GET", "/api/v1/stations/FZ1")
    assert status == 200 and json.loads(body)["id"] == "FZ1"
