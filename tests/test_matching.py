"""The capability rule layer: pure functions, no server."""

from __future__ import annotations

from ants_nats import AgentCard, CapabilitySpec, Task
from ants_nats.matching import decide, missing, rank, unroutable


def card(agent: str, *caps: str, load: int = 0, capacity: int = 2) -> AgentCard:
    return AgentCard(
        id=agent,
        name=agent,
        capabilities=tuple(CapabilitySpec(name=c) for c in caps),
        load=load,
        capacity=capacity,
        software="test",
    )


def test_unroutable_names_what_no_live_agent_has() -> None:
    cards = [card("a", "fetch"), card("b", "parse")]
    assert unroutable(cards, ["fetch"]) is None
    assert unroutable(cards, ["fetch", "llm"]) == ("llm",)
    # Both exist, but on different agents: no one can take it, so the whole set is named.
    assert unroutable(cards, ["fetch", "parse"]) == ("fetch", "parse")
    assert unroutable([], ["fetch"]) == ("fetch",)
    assert unroutable([], []) is None


def test_rank_prefers_the_least_loaded_capable_agent() -> None:
    cards = [card("busy", "llm", load=2, capacity=2), card("idle", "llm"), card("other", "parse")]
    assert [c.id for c in rank(cards, ["llm"])] == ["idle", "busy"]
    assert missing(["a", "b"], ["b", "c", "d"]) == ("c", "d")


def test_decide_accepts_declines_with_reasons() -> None:
    specs = (CapabilitySpec(name="llm", limits={"max_tokens": 1000}),)
    task = Task(id="t", kind="k", requires=("llm",), payload={"limits": {"llm.max_tokens": 500}})
    assert decide(specs, 0, 1, task).accept
    assert decide(specs, 1, 1, task).reason == "at capacity (1/1)"
    big = Task(id="t", kind="k", requires=("llm",), payload={"limits": {"llm.max_tokens": 5000}})
    assert decide(specs, 0, 1, big).reason == "llm.max_tokens=5000 exceeds this agent's limit 1000.0"
    alien = Task(id="t", kind="k", requires=("vision",))
    assert decide(specs, 0, 1, alien).reason == "lacks capability vision"
