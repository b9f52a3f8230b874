"""Pure checks of the dependency graph (no server needed)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ants_nats import Task
from ants_nats.dag import find_cycle
from ants_nats.names import requires_of, route_of


@given(st.integers(min_value=1, max_value=30), st.data())
def test_forward_only_edges_never_form_a_cycle(n: int, data: st.DataObject) -> None:
    edges = {
        str(i): data.draw(st.lists(st.sampled_from([str(j) for j in range(i)]), unique=True)) if i else []
        for i in range(n)
    }
    assert find_cycle(edges) is None


@given(st.integers(min_value=1, max_value=30), st.data())
def test_a_back_edge_is_found_and_the_cycle_is_real(n: int, data: st.DataObject) -> None:
    edges: dict[str, list[str]] = {str(i): [str(i + 1)] if i + 1 < n else [] for i in range(n)}
    start = data.draw(st.integers(min_value=0, max_value=n - 1))
    edges[str(n - 1)].append(str(start))
    cycle = find_cycle(edges)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    for a, b in itertools.pairwise(cycle):
        assert b in edges[a]


def test_task_sets_are_canonical() -> None:
    a = Task(id="t", kind="k", requires=("b", "a", "a"), depends_on=("y", "x"))
    b = Task(id="t", kind="k", requires=("a", "b"), depends_on=("x", "y"))
    assert a.model_dump_json() == b.model_dump_json()
    assert a.route == "a=b"


def test_route_names_round_trip() -> None:
    assert requires_of(route_of(["b", "a"])) == ("a", "b")
    assert requires_of(route_of([])) == ()
