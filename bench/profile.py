"""Profiles of the server during the measured window, with py-spy (optional).

``--profile`` records the csms process with ``py-spy record --format raw`` (collapsed
stacks) for the window and summarises them: the functions that hold the CPU themselves
("self") and those under which the time is spent ("total"), by file and function. A
flame graph can be drawn from the raw file with any collapsed-stack tool.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

# where a thread waits rather than works: the event loop's selector, aiosqlite's worker
# thread waiting for its next job (its queue.get() is C code, so it shows as this frame),
# the default executor's idle threads
IDLE_LEAVES = (
    "EpollSelector.select",
    ":_connection_worker_thread",
    ":_worker",
    "Condition.wait",
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``function (path/to/file.py:123)`` -> ``file.py:function``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    marker = "site-packages/"
    if marker in path:
        path = path.split(marker, 1)[1]
    else:
        for root in ("/csms/", "/ocpi_bridge/", "/bench/"):
            if root in path:
                path = root.strip("/") + "/" + path.split(root, 1)[1]
                break
        else:
            path = path.rsplit("/", 2)[-1] if "/lib/python" not in path else path.split("/lib/")[-1]
    return f"{path}:{m.group('func')}"


def summarise(raw_path: Path, top: int = 25) -> dict[str, Any]:
    """Top functions by self and by total (inclusive) samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    idle = 0
    with open(raw_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count_text = line.rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                continue
            frames = [_short(fr) for fr in stack.split(";") if fr]
            # the thread name comes first in py-spy's raw output
            frames = [fr for fr in frames if not fr.startswith(("process ", "thread "))]
            samples += count
            if not frames:
                continue
            leaf = frames[-1]
            if leaf.endswith(IDLE_LEAVES):
                idle += count
                continue
            own[leaf] += count
            for fr in set(frames):
                total[fr] += count

    def share(c: Counter[str], of: int) -> list[dict[str, Any]]:
        return [
            {"function": k, "samples": v, "percent": round(100 * v / max(1, of), 1)}
            for k, v in c.most_common(top)
        ]

    busy = samples - idle
    return {
        "samples": samples,
        "idle_samples": idle,
        "busy_samples": busy,
        "self": share(own, busy),
        "total": share(total, busy),
    }
