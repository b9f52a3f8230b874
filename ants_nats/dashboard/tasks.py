"""The dashboard's index of the board's tasks: one summary per task, counts, and search.

A board may hold tens of thousands of tasks; no browser tab should receive them all. The index
keeps every task's summary in the dashboard process and answers what the page shows: counts by
route and status, the most recently changed tasks, the ones held or unroutable, and a search by id
prefix, status and kind that returns only the newest matches. Each change carries what the task
was before (``was``), so a tab keeps its counts exact from the deltas alone.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..models import TaskStatus

Json = dict[str, Any]

SHOWN = 200
"""Most tasks of each group a new tab receives, and most a search returns."""

_TERMINAL = frozenset(s.value for s in TaskStatus if s.terminal)


def open_unroutable(summary: Json) -> bool:
    """Whether the summarised task waits for an able agent that nobody live is."""
    return summary["unroutable"] is not None and summary["status"] not in _TERMINAL


class TaskIndex:
    """Every task's summary, counted by route and status and by kind."""

    def __init__(self) -> None:
        self.summaries: dict[str, Json] = {}
        self.counts: dict[str, Counter[str]] = {}
        """Tasks per route, then per status."""
        self.kinds: Counter[str] = Counter()
        self.unroutable = 0
        """Unfinished tasks no live agent can serve."""

    def put(self, summary: Json) -> Json | None:
        """A task's new summary; the delta for the tabs, or None when nothing visible changed."""
        known = self.summaries.get(summary["id"])
        if known == summary:
            return None
        was = None
        if known is not None:
            was = {"route": known["route"], "status": known["status"], "unroutable": open_unroutable(known)}
            self.counts[known["route"]][known["status"]] -= 1
            self.kinds[known["kind"]] -= 1
            self.unroutable -= open_unroutable(known)
        self.summaries[summary["id"]] = summary
        self.counts.setdefault(summary["route"], Counter())[summary["status"]] += 1
        self.kinds[summary["kind"]] += 1
        self.unroutable += open_unroutable(summary)
        return {"type": "task", "task": summary, "was": was}

    def by_status(self) -> Counter[str]:
        """Tasks per status, over every route."""
        total: Counter[str] = Counter()
        for statuses in self.counts.values():
            total.update(statuses)
        return total

    def shown(self, limit: int = SHOWN) -> list[Json]:
        """What a new tab receives: the ``limit`` most recently changed tasks, every held one (an
        agent holds at most its capacity) and up to ``limit`` unroutable ones."""
        recent = _newest(self.summaries.values(), limit)
        held = [s for s in self.summaries.values() if s["status"] == "claimed"]
        stuck = _newest((s for s in self.summaries.values() if open_unroutable(s)), limit)
        return list({s["id"]: s for s in (*recent, *held, *stuck)}.values())

    def search(
        self, *, prefix: str = "", status: str = "", kind: str = "", limit: int = SHOWN
    ) -> tuple[list[Json], int]:
        """The ``limit`` most recently changed tasks whose id starts with ``prefix`` and whose
        status and kind are the given ones (empty: any), and how many match in all."""
        matching = [
            s
            for s in self.summaries.values()
            if s["id"].startswith(prefix)
            and (not status or s["status"] == status)
            and (not kind or s["kind"] == kind)
        ]
        return _newest(matching, limit), len(matching)

    def counts_json(self) -> Json:
        """Counts as a tab starts from: per route and status, per kind, and unroutable."""
        return {
            "routes": {route: dict(+statuses) for route, statuses in self.counts.items()},
            "kinds": dict(+self.kinds),
            "unroutable": self.unroutable,
        }


def _newest(summaries: Iterable[Json], limit: int) -> list[Json]:
    return heapq.nlargest(limit, summaries, key=lambda s: (s["updated_at"], s["id"]))
