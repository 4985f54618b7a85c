"""Fuzzing the OCPP port (issue 12): thousands of frames over a real websocket to a real
``csms run`` process.

Frames are drawn by hypothesis from the OCPP 1.6 JSON schemas that the ``ocpp`` package
ships (the ones csms validates with), then some are broken on purpose: nesting, type swaps,
huge numbers, NaN and Infinity, bad unicode (lone surrogates, invalid UTF-8), truncation,
wrong message types and ids, unsolicited answers. Each batch is sent pipelined on one
connection, as a station with a backlog would. What must hold, for every frame:

- the server never closes the connection because of a frame;
- every frame with a readable unique id (a JSON array with a string id that is not a
  CallResult/CallError; or, when it is not JSON, a ``[2,"id"`` beginning) gets an answer
  with that id;
- no frame is ever answered ``InternalError``; a schema-valid transaction message
  (Start/Stop/MeterValues) is always answered with a CallResult;
- the server's memory stays bounded.

The oracle is written here, independently of csms: schema validity from the schema files
with jsonschema, "readable id" from this module's own parsing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.conftest import ADMIN_PASSWORD

FRAMES_WANTED = 5_000
BATCH = 40
EXAMPLES = FRAMES_WANTED // BATCH + 10
RSS_GROWTH_LIMIT_MB = 80

CP_ACTIONS = (
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
)
TRANSACTION_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})
OTHER_ACTIONS = ("Reset", "ChangeConfiguration", "SignCertificate", "NoSuchAction", "")


def _schema(action: str) -> dict[str, Any]:
    path = resources.files("ocpp") / "v16" / "schemas" / f"{action}.json"
    return json.loads(path.read_text(encoding="utf-8"))


SCHEMAS = {a: _schema(a) for a in CP_ACTIONS}
VALIDATORS = {a: Draft4Validator(s) for a, s in SCHEMAS.items()}


# ---------------------------------------------------------------------- strategies


def _texts(max_size: int) -> st.SearchStrategy[str]:
    """Strings a charger might send: plain, any unicode, and now and then lone surrogates
    (schema-valid: a string is a string)."""
    plain = st.text(alphabet="ABCDEFabcdef0123456789-_.:+ ", max_size=max_size)
    wide = st.text(max_size=max_size)
    broken = st.lists(
        st.one_of(
            st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
            st.characters(max_codepoint=0x7F),
        ),
        max_size=max_size,
    ).map("".join)
    return st.one_of(plain, plain, wide, broken)


TIMESTAMPS = st.one_of(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(
        ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00+02:00", "1970-01-01T00:00:00", "now", ""]
    ),
    _texts(40),
)
INTEGERS = st.one_of(
    st.integers(0, 5),
    st.integers(-(2**31), 2**31),
    st.integers(-(2**64), 2**64),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, -(10**40)]),
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy of the values ``schema`` (the draft-4 subset of the OCPP 1.6 schemas)
    accepts."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        strategies = {k: from_schema(v) for k, v in props.items()}
        optional = sorted(set(props) - required)

        @st.composite
        def objects(draw: st.DrawFn) -> dict[str, Any]:
            out = {k: draw(strategies[k]) for k in props if k in required}
            for k in optional:
                if draw(st.booleans()):
                    out[k] = draw(strategies[k])
            return out

        return objects()
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {})), min_size=schema.get("minItems", 0), max_size=3
        )
    if kind == "string":
        if schema.get("format") == "date-time":
            return TIMESTAMPS
        return _texts(min(schema.get("maxLength", 60), 60))
    if kind == "integer":
        return INTEGERS
    if kind == "number":
        return st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False))
    if kind == "boolean":
        return st.booleans()
    return st.none()


PAYLOADS = {a: from_schema(s) for a, s in SCHEMAS.items()}
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# raw JSON text put where a value goes (not something json.dumps would write)
RAW_VALUES = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1.5", "-0", "0.0"]),
    st.integers(19, 60).map(lambda n: "9" * n),
    st.sampled_from(["1" + "0" * 5000, "-" + "7" * 4400]),  # beyond Python's 4,300 digits
    st.sampled_from([r'"\ud800"', r'"a\udc00b"', r'"\udbff\udbff"', r'"\u0000"', r'"\ud83d"']),
    st.integers(30, 36).map(lambda d: "[" * d + "1" + "]" * d),
    st.integers(500, 100_000).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.integers(500, 100_000).map(lambda d: "[" * d + "]" * d),
    st.integers(50_000, 200_000).map(lambda n: '"' + "x" * n + '"'),
    st.just('{"k":1,"k":"dup"}'),
)
MESSAGE_TYPES = st.sampled_from(
    ["2.0", '"2"', "true", "false", "null", "5", "0", "-2", "[2]", "2e0", "1", "{}"]
)


@dataclass(frozen=True)
class Spec:
    """One frame to send, drawn by hypothesis; the unique id is put in when it is sent."""

    action: str
    payload: Any
    mutation: str
    arg: Any = None
    cut: float = 1.0


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    action = draw(st.sampled_from(CP_ACTIONS * 3 + OTHER_ACTIONS))
    payload = draw(PAYLOADS[action]) if action in PAYLOADS else draw(ANY_JSON)
    mutation = draw(
        st.sampled_from(
            [
                "none",
                "none",
                "none",
                "none",
                "type_swap",
                "drop_key",
                "extra_key",
                "raw_value",
                "raw_value",
                "message_type",
                "truncate",
                "bad_utf8",
                "uid",
                "shape",
                "answer",
            ]
        )
    )
    arg: Any = None
    cut = 1.0
    if mutation == "type_swap":
        arg = (draw(st.integers(0, 50)), draw(ANY_JSON))
    elif mutation in ("drop_key", "raw_value"):
        arg = (draw(st.integers(0, 50)), draw(RAW_VALUES))
    elif mutation == "extra_key":
        arg = (draw(st.text(max_size=10)), draw(ANY_JSON))
    elif mutation == "message_type":
        arg = draw(MESSAGE_TYPES)
    elif mutation == "truncate":
        cut = draw(st.floats(0.0, 0.999))
    elif mutation == "bad_utf8":
        arg = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80abc"]))
    elif mutation == "uid":
        arg = draw(st.sampled_from(["int", "null", "object", "long", "missing", "empty"]))
    elif mutation == "shape":
        arg = draw(
            st.sampled_from(["object", "string", "number", "empty", "extra", "payload", "text"])
        )
    elif mutation == "answer":
        arg = draw(st.sampled_from(["result", "error", "bad_error", "bad_result"]))
    return Spec(action, payload, mutation, arg, cut)


# ---------------------------------------------------------------------- rendering


_MARK = "\x00RAW\x00"
_MARK_JSON = json.dumps(_MARK)


def _paths(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (not the root)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*here, k)
            yield from _paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*here, i)
            yield from _paths(v, (*here, i))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _drop(value: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [v for i, v in enumerate(value) if i != path[0]]
    head = path[0]
    if isinstance(value, dict):
        return {**value, head: _drop(value[head], path[1:])}
    copy = list(value)
    copy[head] = _drop(copy[head], path[1:])
    return copy


def _dumps(value: Any) -> str:
    """JSON text; non-ASCII written as is unless a lone surrogate forbids it."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text


def render(spec: Spec, uid: str) -> str | bytes:
    """The frame's text (or bytes) with ``uid`` as its unique id."""
    payload: Any = spec.payload
    raw = None
    m, arg = spec.mutation, spec.arg
    paths = list(_paths(payload))
    if m == "type_swap" and paths:
        payload = _replace(payload, paths[arg[0] % len(paths)], arg[1])
    elif m == "drop_key" and paths:
        payload = _drop(payload, paths[arg[0] % len(paths)])
    elif m == "extra_key" and isinstance(payload, dict):
        payload = {**payload, arg[0] or "x": arg[1]}
    elif m == "raw_value":
        raw = arg[1]
        payload = _replace(payload, paths[arg[0] % len(paths)], _MARK) if paths else _MARK
    kind = "2"
    if m == "message_type":
        kind = arg
    uid_text = json.dumps(uid)
    frame_text: str
    if m == "uid":
        uid_text = {
            "int": "123",
            "null": "null",
            "object": '{"id":"x"}',
            "long": json.dumps(uid + "-" + "L" * 40),
            "empty": '""',
            "missing": "",
        }[arg]
    action_text = json.dumps(spec.action)
    body = _dumps(payload)
    if raw is not None:
        body = body.replace(_MARK_JSON, raw, 1)
    if m == "uid" and arg == "missing":
        frame_text = f"[{kind},{action_text},{body}]"
    elif m == "shape":
        frame_text = {
            "object": f'{{"2":{uid_text}}}',
            "string": json.dumps(f"[2,{uid_text}]"),
            "number": "2",
            "empty": "[]",
            "extra": f"[{kind},{uid_text},{action_text},{body},{{}}]",
            "payload": f"[{kind},{uid_text},{action_text},{json.dumps([body])}]",
            "text": f"[{kind},{uid_text},{action_text},{body}] trailing",
        }[arg]
    elif m == "answer":
        frame_text = {
            "result": f"[3,{uid_text},{body}]",
            "error": f'[4,{uid_text},"GenericError","fuzz",{body}]',
            "bad_error": f"[4,{uid_text}]",
            "bad_result": f"[3,{uid_text}]",
        }[arg]
    else:
        frame_text = f"[{kind},{uid_text},{action_text},{body}]"
    if m == "truncate":
        frame_text = frame_text[: int(len(frame_text) * spec.cut)]
    if m == "bad_utf8":
        encoded = frame_text.encode("utf-8", "surrogatepass")
        at = len(encoded) // 2
        return encoded[:at] + arg + encoded[at:]
    return frame_text


# ---------------------------------------------------------------------- the oracle


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJson(name)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotJson(text)
    return value


def strict_loads(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)


def expected_answer_id(data: str | bytes) -> str | None:
    """The unique id the frame's answer must carry, when it has a readable one (see the
    module docstring); None when no answer is due."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        msg = strict_loads(data)
    except (ValueError, RecursionError):
        prefix = re.match(r'\s*\[\s*2\s*,\s*"([^"\\]{1,36})"', data)
        return prefix.group(1) if prefix is not None else None
    if not isinstance(msg, list) or len(msg) < 2 or not isinstance(msg[1], str):
        return None
    if type(msg[0]) is int and msg[0] in (3, 4):
        return None
    return msg[1]


def schema_valid_call(spec: Spec) -> bool:
    if spec.mutation != "none" or spec.action not in VALIDATORS:
        return False
    return VALIDATORS[spec.action].is_valid(spec.payload)


# ---------------------------------------------------------------------- the server


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    ocpp_port: int
    lines: list[dict[str, Any]] = field(default_factory=list)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kb / 1024


@pytest.fixture
def csms_process(tmp_path: Path) -> Iterator[Server]:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the server's memory")
    config = tmp_path / "csms.toml"
    config.write_text(
        'data_dir = "data"\n'
        "[ocpp]\n"
        'host = "127.0.0.1"\nport = 0\ncall_timeout = 5\naccept_unknown_stations = true\n'
        "[http]\n"
        'host = "127.0.0.1"\nport = 0\n'
        "[database]\n"
        'synchronous = "NORMAL"\n'
        "[logging]\n"
        'format = "json"\nlevel = "info"\n'
    )
    # this checkout's csms, whatever is installed
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, CSMS_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONPATH=path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "csms.cli", "run", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = Server(proc, 0)
    ready = threading.Event()
    log_bytes = [0]

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            log_bytes[0] += len(raw)
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.decode(errors="replace")[:500], "invalid_json": True}
            if len(server.lines) < 100_000:
                server.lines.append(line)
            if line.get("event") == "OCPP websocket server listening":
                server.ocpp_port = int(line["port"])
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), server.lines[-5:]
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        reader.join(5)
    # the log stays valid JSON and bounded, whatever came in
    assert not [line for line in server.lines if line.get("invalid_json")][:3]
    assert log_bytes[0] < 20_000_000, log_bytes[0]


# ---------------------------------------------------------------------- the client


def _station_answer(action: str) -> dict[str, Any]:
    if action == "GetConfiguration":
        return {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False}]}
    return {"status": "Accepted"}


class Station:
    """One charge point's connection (websockets' synchronous client)."""

    def __init__(self, url: str) -> None:
        self.url = url
        protocols = [Subprotocol("ocpp1.6")]
        self.ws: ClientConnection = connect(
            url, subprotocols=protocols, max_size=None, open_timeout=10
        ).__enter__()

    def close(self) -> None:
        self.ws.close()

    def exchange(
        self, frames: list[tuple[str, str | bytes]], timeout: float = 10
    ) -> dict[str, Any]:
        """Send every frame at once, then read until each expected answer came (answering
        the server's own requests meanwhile). Returns the answers by unique id."""
        for _, data in frames:
            self.ws.send(data)
        expected = {uid: expected_answer_id(data) for uid, data in frames}
        wanted = {e for e in expected.values() if e is not None}
        answers: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while not wanted <= answers.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                text = self.ws.recv(timeout=left)
            except TimeoutError:
                break
            msg = json.loads(text)
            if msg[0] == 2:  # the server asks (configuration after a boot)
                self.ws.send(json.dumps([3, msg[1], _station_answer(msg[2])]))
                continue
            answers[msg[1]] = msg
        missing = wanted - answers.keys()
        assert not missing, [data[:300] for uid, data in frames if expected[uid] in missing]
        return {uid: answers[e] for uid, e in expected.items() if e is not None}


@dataclass
class Tally:
    frames: int = 0
    schema_valid: int = 0
    answers: int = 0
    mutations: dict[str, int] = field(default_factory=dict)


def test_fuzz_ocpp_frames_over_a_real_websocket(csms_process: Server) -> None:
    url = f"ws://127.0.0.1:{csms_process.ocpp_port}/ocpp/FUZZ-1"
    station = Station(url)
    tally = Tally()
    rss: list[float] = []
    uids = itertools.count()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
        # no shrinking: the server has state (and a failure may close the connection), so
        # the first failing batch is reported as it was, with its frames
        phases=[Phase.explicit, Phase.generate],
    )
    @given(batch=st.lists(specs(), min_size=BATCH, max_size=BATCH))
    def run(batch: list[Spec]) -> None:
        nonlocal station
        if station.ws.close_code is not None:  # a failing example closed it: go on
            station = Station(url)
        frames = []
        for spec in batch:
            uid = f"f{next(uids)}"
            frames.append((uid, render(spec, uid)))
        try:
            answers = station.exchange(frames)
        except ConnectionClosed as e:
            pytest.fail(f"the server closed the connection ({e}) during a batch")
        # a Heartbeat after the batch: the connection is still up and answers
        probe = f"p{next(uids)}"
        assert station.exchange([(probe, f'[2,"{probe}","Heartbeat",{{}}]')])[probe][0] == 3
        for spec, (uid, data) in zip(batch, frames, strict=True):
            tally.frames += 1
            tally.mutations[spec.mutation] = tally.mutations.get(spec.mutation, 0) + 1
            answer = answers.get(uid)
            if answer is None:
                continue
            tally.answers += 1
            assert answer[0] in (3, 4), answer
            if answer[0] == 4:
                assert answer[2] != "InternalError", (data[:500], answer)
            if schema_valid_call(spec):
                tally.schema_valid += 1
                if spec.action in TRANSACTION_ACTIONS:
                    assert answer[0] == 3, ("a transaction message was refused", data, answer)
        if len(rss) < 2 and tally.frames >= 400:
            rss.append(csms_process.rss_mb())  # after warming up: caches, schemas, pages

    started = time.monotonic()
    run()
    rss.append(csms_process.rss_mb())
    elapsed = time.monotonic() - started
    station.close()
    print(
        f"\nfuzz: {tally.frames} frames ({tally.schema_valid} schema-valid calls, "
        f"{tally.answers} answered) in {elapsed:.1f} s; server RSS {rss[0]:.0f} -> "
        f"{rss[-1]:.0f} MB; mutations {dict(sorted(tally.mutations.items()))}"
    )
    assert tally.frames >= FRAMES_WANTED
    assert tally.schema_valid >= FRAMES_WANTED // 5
    assert rss[-1] - rss[0] < RSS_GROWTH_LIMIT_MB, rss
    assert csms_process.proc.poll() is None  # still running
