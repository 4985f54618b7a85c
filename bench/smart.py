"""What smart charging's pure cores cost (issue 18): ``python -m bench.smart [--runs N]``.

csms recomputes a site's shares whenever a transaction starts or stops, a meter value shows a
car drawing less than its share, or the limit changes; the issue asks for that cost on a site
of 200 EVSEs. This measures, in this process and without a server:

- ``allocate()`` for 200 EVSEs with mixed priorities, maxima and measured draws (the share
  itself), and the whole recomputation around it (the site's limit at that instant, the
  shares, and which of them are worth a SetChargingProfile);
- ``composite()`` for one connector holding 10 profiles of every purpose and kind, over 24 h
  (what csms compares with a station's GetCompositeSchedule, and draws).

Each figure is the mean and the 99th percentile (nearest rank) of N timed calls after a few
untimed ones, in microseconds, with the inputs varied between calls so that no call repeats
the previous one's facts.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from smartcharge.profiles import Period, Profile, Schedule, composite
from smartcharge.share import Demand, SiteRules, Window, allocate, site_limit_a, worth_sending

T0 = datetime(2027, 3, 2, 6, 0, tzinfo=UTC)


def _p(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (q in 0..100)."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _timed(runs: int, make: Callable[[int], Callable[[], object]]) -> dict[str, float]:
    """Time ``runs`` calls, each of a fresh closure from ``make(i)`` built outside the timer."""
    for i in range(min(20, runs)):
        make(i)()
    samples: list[float] = []
    for i in range(runs):
        call = make(i)
        t = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t) / 1000)
    s = sorted(samples)
    return {
        "runs": runs,
        "mean_us": round(statistics.fmean(s), 1),
        "p50_us": round(_p(s, 50), 1),
        "p99_us": round(_p(s, 99), 1),
        "max_us": round(s[-1], 1),
    }


def site_demands(rng: random.Random, n: int) -> list[Demand]:
    """A car park of ``n`` EVSEs: a few priority ones, mixed maxima, most measured."""
    out = []
    for i in range(n):
        out.append(
            Demand(
                key=(f"CP{i // 2:04d}", i % 2 + 1),
                priority=1 if rng.random() < 0.05 else 0,
                max_a=Decimal(rng.choice([16, 32, 32, 32, 10])),
                drawing_a=(Decimal(rng.randint(0, 320)) / 10 if rng.random() < 0.8 else None),
                started_at=T0 + timedelta(seconds=rng.randint(0, 36_000)),
            )
        )
    return out


def ten_profiles() -> list[tuple[int, Profile]]:
    """Every purpose and kind on one connector, with stacking and recurrence inside the day."""

    def p(
        pid: int, purpose: str, kind: str, stack: int, periods: list[tuple[int, int]], **kw: Any
    ) -> Profile:
        return Profile(
            id=pid,
            stack_level=stack,
            purpose=purpose,
            kind=kind,
            recurrency=kw.pop("recurrency", None),
            valid_from=kw.pop("valid_from", None),
            valid_to=kw.pop("valid_to", None),
            schedule=Schedule(
                charging_rate_unit=kw.pop("unit", "A"),
                start_schedule=kw.pop("start", None),
                duration=kw.pop("duration", None),
                periods=[Period(start_period=s, limit=Decimal(v)) for s, v in periods],
            ),
        )

    day = [(h * 3600, 16 + h % 8) for h in range(24)]
    night = datetime(2027, 3, 1, 22, 0, tzinfo=UTC)
    return [
        (0, p(1, "ChargePointMaxProfile", "Absolute", 0, [(0, 63)], start=T0)),
        (
            0,
            p(
                2,
                "ChargePointMaxProfile",
                "Recurring",
                1,
                [(0, 40), (4 * 3600, 63)],
                recurrency="Daily",
                start=night,
                duration=8 * 3600,
            ),
        ),
        (0, p(3, "TxDefaultProfile", "Absolute", 0, [(0, 32)], start=T0)),
        (0, p(4, "TxDefaultProfile", "Recurring", 1, day, recurrency="Daily", start=night)),
        (1, p(5, "TxDefaultProfile", "Absolute", 0, [(0, 24), (7200, 20)], start=T0)),
        (
            1,
            p(
                6,
                "TxDefaultProfile",
                "Recurring",
                2,
                [(0, 11000), (43_200, 7400)],
                recurrency="Weekly",
                start=night,
                unit="W",
            ),
        ),
        (
            1,
            p(
                7,
                "TxDefaultProfile",
                "Absolute",
                3,
                [(0, 10)],
                start=T0 + timedelta(hours=5),
                duration=5400,
            ),
        ),
        (1, p(8, "TxProfile", "Relative", 0, [(0, 6), (900, 16), (3600, 32)], duration=4 * 3600)),
        (
            1,
            p(
                9,
                "TxProfile",
                "Relative",
                1,
                [(0, 20)],
                duration=7200,
                valid_to=T0 + timedelta(hours=20),
            ),
        ),
        (
            1,
            p(
                10,
                "TxProfile",
                "Absolute",
                2,
                [(0, 13)],
                start=T0 + timedelta(hours=9),
                duration=3600,
                valid_from=T0 + timedelta(hours=9, minutes=30),
            ),
        ),
    ]


def run(runs: int, seed: int, evses: int) -> dict[str, Any]:
    rng = random.Random(seed)
    sites = [site_demands(rng, evses) for _ in range(16)]
    rules = SiteRules(
        limit=Decimal(1000),
        unit="A",
        windows=[Window(start="18:00", end="22:00", limit=Decimal(700))],
    )
    previous = {d.key: Decimal(16) for d in sites[0]}

    def share(i: int) -> Callable[[], object]:
        demands = sites[i % len(sites)]
        limit = Decimal(600 + (i * 37) % 800)
        return lambda: allocate(limit, demands, Decimal(6))

    def recompute(i: int) -> Callable[[], object]:
        demands = sites[i % len(sites)]
        now = T0 + timedelta(minutes=7 * i)
        dynamic = Decimal(900 + (i * 53) % 400)

        def go() -> object:
            limit = site_limit_a(rules, now, dynamic)
            shares = allocate(limit, demands, rules.min_per_evse)
            return [k for k, v in shares.items() if worth_sending(previous.get(k), v)]

        return go

    installed = ten_profiles()

    def schedule(i: int) -> Callable[[], object]:
        start = T0 + timedelta(minutes=11 * i)
        tx = (1, start - timedelta(minutes=i % 90))
        return lambda: composite(installed, 1, start, 86_400, "A", tx)

    example = composite(installed, 1, T0, 86_400, "A", (1, T0))
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seed": seed,
        "allocate": {"evses": evses, **_timed(runs, share)},
        "recompute": {"evses": evses, **_timed(runs, recompute)},
        "composite": {
            "profiles": len(installed),
            "seconds": 86_400,
            "periods_out": len(example),
            **_timed(runs, schedule),
        },
    }


def table(r: dict[str, Any]) -> str:
    lines = [
        f"smart charging cores: Python {r['python']} on {r['machine']}, seed {r['seed']}",
        f"{'figure':<44}{'runs':>7}{'mean us':>11}{'p50 us':>11}{'p99 us':>11}{'max us':>11}",
    ]
    labels = {
        "allocate": f"allocate() {r['allocate']['evses']} EVSEs",
        "recompute": f"site limit + allocate + hysteresis, {r['recompute']['evses']} EVSEs",
        "composite": (
            f"composite() {r['composite']['profiles']} profiles, 24 h "
            f"({r['composite']['periods_out']} periods)"
        ),
    }
    for name, label in labels.items():
        f = r[name]
        lines.append(
            f"{label:<44}{f['runs']:>7}{f['mean_us']:>11}{f['p50_us']:>11}"
            f"{f['p99_us']:>11}{f['max_us']:>11}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.smart", description=__doc__)
    parser.add_argument("--runs", type=int, default=2000, help="timed calls per figure")
    parser.add_argument("--evses", type=int, default=200, help="EVSEs of the site")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.evses < 1:
        parser.error("--runs and --evses must be at least 1")
    result = run(args.runs, args.seed, args.evses)
    print(table(result))
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
