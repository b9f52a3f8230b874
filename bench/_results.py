"""What the fastpath benchmark measures and how it summarises it: traffic counters, rates, percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ants_nats.server import monitor_json


@dataclass(frozen=True)
class Traffic:
    """A snapshot of the server's counters (``/varz``): messages and bytes, in and out, summed."""

    msgs: int
    bytes: int

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(self.msgs - other.msgs, self.bytes - other.bytes)

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.msgs + other.msgs, self.bytes + other.bytes)


async def traffic(monitor_port: int) -> Traffic:
    """``in_msgs + out_msgs`` and ``in_bytes + out_bytes`` of the server right now."""
    varz = await monitor_json(monitor_port, "/varz")
    if not varz:
        raise RuntimeError(f"no /varz on monitor port {monitor_port}")
    return _in_and_out(varz)


def _in_and_out(counters: dict[str, Any]) -> Traffic:
    """Messages and bytes in plus out, from a server's or a connection's counters."""
    return Traffic(
        int(counters["in_msgs"]) + int(counters["out_msgs"]),
        int(counters["in_bytes"]) + int(counters["out_bytes"]),
    )


async def traffic_by_name(monitor_port: int, group: Callable[[str], str] = str) -> dict[str, Traffic]:
    """Each client connection's messages and bytes in and out so far (``/connz``), added up per
    ``group`` of its connection name (the name itself by default)."""
    connz = await monitor_json(monitor_port, "/connz?limit=1024")
    found: dict[str, Traffic] = {}
    for c in connz.get("connections") or []:
        key = group(str(c.get("name") or "other"))
        found[key] = found.get(key, Traffic(0, 0)) + _in_and_out(c)
    return found


@dataclass(frozen=True)
class Rate:
    """``tasks`` handled in ``seconds``; with the server traffic they cost, when it was counted."""

    tasks: int
    seconds: float
    traffic: Traffic | None = None
    claims_per_task: float | None = None
    cpu_s: float | None = None
    """CPU time of the benchmark's process over the run (user + system), when it was taken: the
    client's share only (the embedded nats-server is a process of its own)."""

    @property
    def per_s(self) -> float:
        return self.tasks / self.seconds

    @property
    def msgs_per_task(self) -> float | None:
        return None if self.traffic is None else self.traffic.msgs / self.tasks

    @property
    def kib_per_task(self) -> float | None:
        return None if self.traffic is None else self.traffic.bytes / self.tasks / 1024

    @property
    def cpu_us_per_task(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s / self.tasks * 1e6

    def as_json(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "seconds": round(self.seconds, 4),
            "tasks_per_s": round(self.per_s, 1),
            "msgs_per_task": _round(self.msgs_per_task, 2),
            "kib_per_task": _round(self.kib_per_task, 3),
            "claims_per_task": _round(self.claims_per_task, 3),
            "cpu_us_per_task": _round(self.cpu_us_per_task, 1),
        }


@dataclass(frozen=True)
class Latency:
    """Samples of one latency, in seconds."""

    samples: tuple[float, ...]

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        ordered = sorted(self.samples)
        rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    @property
    def p50(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99(self) -> float:
        return self.percentile_ms(99)

    def as_json(self) -> dict[str, Any]:
        return {"samples": len(self.samples), "p50_ms": round(self.p50, 3), "p99_ms": round(self.p99, 3)}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def median(values: list[float | None]) -> float | None:
    """Median of the values that were measured (None when none was)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_rate(runs: list[Rate]) -> dict[str, float | None]:
    """Medians over repeats of each figure of a rate."""
    return {
        "tasks_per_s": median([r.per_s for r in runs]),
        "msgs_per_task": median([r.msgs_per_task for r in runs]),
        "kib_per_task": median([r.kib_per_task for r in runs]),
        "claims_per_task": median([r.claims_per_task for r in runs]),
        "cpu_us_per_task": median([r.cpu_us_per_task for r in runs]),
    }


def median_latency(runs: list[Latency]) -> dict[str, float | None]:
    """Medians over repeats of p50 and p99, in milliseconds."""
    return {"p50_ms": median([r.p50 for r in runs]), "p99_ms": median([r.p99 for r in runs])}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` when both were measured."""
    return None if a is None or not b else a / b
