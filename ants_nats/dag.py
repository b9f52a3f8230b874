"""Pure checks on a submission's dependency graph (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import DependencyCycle, InvalidTask
from .models import Task


def check_batch(tasks: Sequence[Task]) -> None:
    """Reject duplicate ids and dependency cycles inside one submission.

    Tasks already on the board cannot depend on new ones (specs are immutable), so any cycle must lie
    entirely inside the batch.
    """
    ids: set[str] = set()
    for task in tasks:
        if task.id in ids:
            raise InvalidTask(f"task id {task.id!r} appears twice in the submission")
        ids.add(task.id)
    edges = {task.id: [dep for dep in task.depends_on if dep in ids] for task in tasks}
    cycle = find_cycle(edges)
    if cycle:
        raise DependencyCycle(cycle)


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in ``edges`` (node -> successors) as ``[a, b, ..., a]``, or None. Iterative DFS."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for root in edges:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        iters = [iter(edges[root])]
        colour[root] = grey
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                iters.pop()
            elif colour.get(nxt, black) == grey:
                return [*path[path.index(nxt) :], nxt]
            elif colour.get(nxt) == white:
                colour[nxt] = grey
                path.append(nxt)
                iters.append(iter(edges[nxt]))
    return None
