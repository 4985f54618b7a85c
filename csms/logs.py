"""Structured logs: readable on a terminal, JSON lines otherwise.

Every line carries the station id and OCPP message id when there is one (bound through
structlog's contextvars by the connection that handles the frame). Logs of the libraries
(websockets, aiohttp) go through the same renderer.

What a station sends cannot fill the disk through the log:

- every field is bounded: a string to :data:`MAX_FIELD_CHARS` characters, a payload (dict,
  list) to the same size in a short form, a traceback to :data:`MAX_EXCEPTION_CHARS`;
- a station's repeated warning (or error) is rate-limited: the same event from the same
  station at most :data:`BURST` times per :data:`WINDOW_SECONDS`; the next line that gets
  through says how many were left out (``suppressed``);
- the JSON log is always valid JSON: no ``NaN`` or ``Infinity`` (written as strings), and a
  lone surrogate written as an escape.
"""

from __future__ import annotations

import json
import logging
import math
import reprlib
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

MAX_FIELD_CHARS = 2000
MAX_EXCEPTION_CHARS = 20_000
BURST = 20
WINDOW_SECONDS = 60.0
MAX_LIMITED_KEYS = 10_000
_LEVELS_LIMITED = frozenset({"warning", "error", "critical", "exception"})
_TEXT_KEYS = frozenset({"exception", "stack"})  # rendered tracebacks

_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxdict = _repr.maxlist = _repr.maxtuple = 30
_repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 10
_repr.maxstring = 300
_repr.maxother = 200
_repr.maxlong = 60


def clip(value: Any, limit: int = MAX_FIELD_CHARS) -> Any:
    """``value`` when it is small and plain; otherwise a string of at most about ``limit``
    characters that shows its beginning (and never a lone surrogate)."""
    if isinstance(value, str):
        if len(value) > limit:
            value = f"{value[:limit]}… ({len(value)} characters)"
        return value if value.isascii() else _no_surrogates(value)
    if isinstance(value, int) and not -(10**60) < value < 10**60:
        return f"<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    if isinstance(value, bytes | bytearray):
        text = bytes(value[:limit]).decode("utf-8", "replace")
        return f"{text}… ({len(value)} bytes)" if len(value) > limit else text
    if isinstance(value, dict | list | tuple | set | frozenset):
        if _fits(value, limit):
            return value
        text = _repr.repr(value)
        return text if len(text) <= limit else f"{text[:limit]}…"
    return value


def _no_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _fits(value: Any, budget: int, max_depth: int = 8) -> bool:
    """Whether ``value`` is at most ``budget`` characters of text, at most ``max_depth``
    levels deep, and holds only plain, UTF-8-safe values (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 2
            if not item.isascii() and _no_surrogates(item) is not item:
                return False
        elif isinstance(item, dict):
            if depth >= max_depth:
                return False
            budget -= 2 + 2 * len(item)
            for k, v in item.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            if depth >= max_depth:
                return False
            budget -= 2 + len(item)
            stack.extend((v, depth + 1) for v in item)
        elif item is None or isinstance(item, bool | float):
            budget -= 5
        elif isinstance(item, int):
            if abs(item) > 10**100:
                return False
            budget -= 20
        else:
            budget -= 40
        if budget < 0:
            return False
    return True


def clip_fields(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: bound every field (see the module docstring)."""
    for key, value in event_dict.items():
        if key.startswith("_") or key in ("exc_info", "stack_info"):
            continue
        if key in _TEXT_KEYS and isinstance(value, str):
            event_dict[key] = clip(value, MAX_EXCEPTION_CHARS)
        elif not isinstance(value, float | bool) and value is not None:
            event_dict[key] = clip(value)
    return event_dict


class StationRateLimit:
    """structlog processor: the same warning or error (by event text) from the same station
    at most ``burst`` times per ``window`` seconds; the rest are counted, and the next line
    that gets through carries ``suppressed`` (how many were left out). Lines without a
    station id are never limited. Memory is bounded by ``max_keys``."""

    def __init__(
        self,
        burst: int = BURST,
        window: float = WINDOW_SECONDS,
        max_keys: int = MAX_LIMITED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        # (station, event) -> [window start, lines in the window, suppressed in the window]
        self._seen: dict[tuple[str, str], list[float]] = {}

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        level = event_dict.get("level", method_name)
        station = event_dict.get("station_id")
        if station is None or level not in _LEVELS_LIMITED:
            return event_dict
        key = (str(station)[:300], str(event_dict.get("event"))[:300])
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            if entry is not None:
                del self._seen[key]
                if entry[2]:
                    event_dict["suppressed"] = int(entry[2])
            elif len(self._seen) >= self.max_keys:
                del self._seen[next(iter(self._seen))]  # the oldest
            self._seen[key] = [now, 1, 0]
            return event_dict
        entry[1] += 1
        if entry[1] > self.burst:
            entry[2] += 1
            raise structlog.DropEvent
        if entry[1] == self.burst:
            event_dict["rate_limited"] = (
                f"more lines like this from this station in the next {self.window:g} s "
                "are counted, not logged"
            )
        return event_dict


def _finite(obj: Any, as_text: bool) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        if not as_text:
            return None
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _finite(v, as_text) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v, as_text) for v in obj]
    return obj


def json_dumps(obj: Any, *, non_finite_as_text: bool = True, **kw: Any) -> str:
    """JSON as RFC 8259 has it, whatever ``obj`` holds: NaN and the infinities as strings
    (the log: what was there stays readable), or as null (``non_finite_as_text=False``:
    what the API and the OCPI side send, which clients parse as numbers)."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(_finite(obj, non_finite_as_text), allow_nan=False, **kw)


def json_renderer() -> structlog.processors.JSONRenderer:
    """The renderer of the JSON log: one object per line, valid JSON whatever it holds."""
    return structlog.processors.JSONRenderer(serializer=json_dumps)


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = json_renderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared.append(clip_fields)
    structlog.configure(
        processors=[
            *shared,
            StationRateLimit(),  # ours only: a library's line cannot be dropped this way
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # calls below the level return at once, before any processor runs: a daemon logging
        # at "warning" pays nothing for the info lines of every push
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # one line per websocket handshake refusal is ours already; keep the library quieter
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
    logging.getLogger("aiohttp.access").setLevel(max(logging.WARNING, root.level))
