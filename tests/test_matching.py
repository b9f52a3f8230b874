"""The capability rule layer: pure functions, no server."""

from __future__ import annotations

from datetime import timedelta

from ants_nats import AgentCard, CapabilitySpec, Task
from ants_nats.matching import Verdict, decide, declined_by_all, missing, rank, unroutable, unroutable_because
from ants_nats.models import DeclineNote, TaskRecord, TaskStatus, utcnow


def card(
    agent: str, *caps: str, load: int = 0, capacity: int = 2, kinds: tuple[str, ...] | None = None
) -> AgentCard:
    return AgentCard(
        id=agent,
        name=agent,
        capabilities=tuple(CapabilitySpec(name=c) for c in caps),
        kinds=kinds,
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
    at_capacity = decide(specs, 1, 1, task)
    # Load passes: a decline for it is a "not now", which lapses; a misfit stands.
    assert (at_capacity.reason, at_capacity.retry_after) == ("at capacity (1/1)", 1.0)
    big = Task(id="t", kind="k", requires=("llm",), payload={"limits": {"llm.max_tokens": 5000}})
    assert decide(specs, 0, 1, big) == Verdict(False, "llm.max_tokens=5000 exceeds this agent's limit 1000.0")
    alien = Task(id="t", kind="k", requires=("vision",))
    assert decide(specs, 0, 1, alien).reason == "lacks capability vision"


def test_kinds_route_as_capabilities_do() -> None:
    echo_only = card("e", "echo", kinds=("echo",))
    anything = card("any", "echo")  # a card naming no kinds handles any (a catch-all handler)
    shout = Task(id="s", kind="shout", requires=("echo",))
    assert unroutable_because([echo_only], shout) == ((), "no live agent handles kind 'shout' with [echo]")
    assert unroutable_because([echo_only, anything], shout) is None
    assert unroutable_because([echo_only], Task(id="v", kind="shout", requires=("vision",))) == (
        ("vision",),
        "no live agent has [vision]",
    )
    # A task that requires nothing waits for any agent, whenever one comes.
    assert unroutable_because([], Task(id="n", kind="shout")) is None
    assert [c.id for c in rank([echo_only, anything], ["echo"], "shout")] == ["any"]


def test_declined_by_all_counts_only_standing_declines_of_able_agents() -> None:
    a, b = card("a", "x", kinds=("work",)), card("b", "x")
    task = Task(id="t", kind="work", requires=("x",))
    now = utcnow()

    def note(c: AgentCard, *, offer: str | None = None, until: timedelta | None = None) -> DeclineNote:
        lapse = None if until is None else now + until
        return DeclineNote(
            agent=c.id, count=1, reason="no", at=now, offer=offer or c.offer, token=1, until=lapse
        )

    def record(*notes: DeclineNote) -> TaskRecord:
        return TaskRecord(task=task, status=TaskStatus.PENDING, declines=notes)

    assert declined_by_all([a, b], record(note(a))) is None  # b has not declined yet
    assert declined_by_all([a, b], record(note(a), note(b))) == (
        (),
        "declined by every live agent able to take it (a: no; b: no)",
    )
    # A decline made with another offer, or a 'not now' that lapsed, no longer stands.
    assert declined_by_all([a, b], record(note(a), note(b, offer="before"))) is None
    assert declined_by_all([a, b], record(note(a), note(b, until=timedelta(seconds=-1)))) is None
    assert declined_by_all([a, b], record(note(a), note(b, until=timedelta(seconds=5)))) is not None
    assert record(note(a), note(b, until=timedelta(seconds=5))).declines_lapse(now) == 5.0
    # The offer covers capabilities, kinds and capacity, not load.
    assert a.offer == a.model_copy(update={"load": 1}).offer != a.model_copy(update={"capacity": 3}).offer
