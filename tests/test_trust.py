"""Adversarial agents on a real server: the system notices, adapts, and loses no task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AntsError,
    BoardConfig,
    CorruptEntry,
    EmbeddedServer,
    Identity,
    InvalidTask,
    Lease,
    LeaseLost,
    NotTaken,
    PermissionDenied,
    ServerUnavailable,
    Task,
    TaskBoard,
    TaskContext,
    TaskNotFound,
    TaskStatus,
    TrailEvent,
    Verifier,
    connect,
)
from ants_nats._store import Bucket, publish
from ants_nats.demo import AbandoningAgent
from ants_nats.identity import SIG_HEADER, SIGNER_HEADER
from ants_nats.ledger import Ledger, accountable, apply
from ants_nats.models import AgentLedger, Counts
from ants_nats.names import lease_key, trail_subject
from ants_nats.reputation import Reputation

from .conftest import AGENT as ANT_A
from .conftest import LEDGER, RIVAL, TEST_CARD_TTL
from .helpers import Recorder, swarm, until_event, until_ledger, until_tasks


@asynccontextmanager
async def ledger_running(board: TaskBoard) -> AsyncIterator[Ledger]:
    ledger = Ledger(board.nc, half_life=board.config.reputation.half_life)
    await ledger.ensure()
    projector = asyncio.create_task(ledger.project(board.trail, verifier=Verifier(board.directory)))
    try:
        yield ledger
    finally:
        projector.cancel()
        await asyncio.gather(projector, return_exceptions=True)


async def test_an_agent_that_abandons_claims_is_quarantined_and_its_work_redone(board: TaskBoard) -> None:
    async def never(task: Task, ctx: TaskContext) -> JsonValue:
        await asyncio.Event().wait()
        return None

    slacker = AbandoningAgent(board, name="slacker", capabilities=["cpu"], capacity=3, shutdown_grace=0.1)
    slacker.handler("work")(never)
    tasks = [Task(id=f"s{i}", kind="work", requires=("cpu",), max_attempts=10) for i in range(8)]
    recorder = Recorder()
    async with ledger_running(board), slacker:
        await board.submit_many(tasks[:3])
        # The slacker grabs the first three before any honest agent exists.
        await until_tasks(board, lambda seen: sum(r.holder == slacker.id for r in seen.values()) == 3)
        honest = Agent(board, name="honest", capabilities=["cpu"], capacity=2)
        honest.handler("work")(recorder.handle)
        async with honest:
            await board.submit_many(tasks[3:])
            final = await board.wait([t.id for t in tasks], timeout=60)
            abandoned = [a for r in final.values() for a in r.attempts if a.agent == slacker.id]
            # Read the score once the projection has taken in every abandoned claim (no cache).
            await until_ledger(board, slacker.id, lambda e: e.totals.expired == len(abandoned))
            fresh = Reputation(board.nc, board.config.reputation)
            quarantine = await fresh.quarantined(slacker.id, ["cpu"])
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert set(recorder.runs) == {t.id for t in tasks}
    assert all(a.outcome == "expired" for a in abandoned)
    assert 3 <= len(abandoned) <= 5  # bounded: after a few expiries it gets no fresh work
    assert quarantine == ["cpu"]


async def test_a_false_capability_costs_reputation_for_that_capability_only(board: TaskBoard) -> None:
    async def fake_translate(task: Task, ctx: TaskContext) -> JsonValue:
        if task.kind == "translate":
            raise RuntimeError("cannot actually translate")
        return "fetched"

    liar = Agent(board, name="liar", capabilities=["translate", "fetch"], capacity=2)
    for kind in ("translate", "fetch"):
        liar.handler(kind)(fake_translate)
    tasks = [
        *(Task(id=f"tr{i}", kind="translate", requires=("translate",), max_attempts=1) for i in range(3)),
        *(Task(id=f"fe{i}", kind="fetch", requires=("fetch",)) for i in range(3)),
    ]
    async with ledger_running(board), liar:
        await board.submit_many(tasks)
        await board.wait([t.id for t in tasks], timeout=30)
        # Let the projection catch up with the liar's whole history, then read it afresh (no cache).
        outcomes = len(tasks)
        await until_ledger(board, liar.id, lambda e: e.totals.completed + e.totals.failed == outcomes)
        fresh = Reputation(board.nc, board.config.reputation)
        translate = await fresh.quarantined(liar.id, ["translate"])
        fetch = await fresh.quarantined(liar.id, ["fetch"])
        scores = await fresh.scores(liar.id, ["translate", "fetch"])
    assert translate == ["translate"]
    assert fetch == []
    assert scores["fetch"] > 0.5 > scores["translate"]


async def test_a_bad_result_mark_lowers_the_completers_score(board: TaskBoard) -> None:
    await board.submit(Task(id="r", kind="work", requires=("math",)))
    lease = await board.claim("r", "sloppy")
    assert isinstance(lease, Lease)
    await board.complete(lease, 2 + 2 == 5)
    async with ledger_running(board):
        await board.mark_bad("r", "2 + 2 is not 5", by="checker")
        entry = await until_ledger(board, "sloppy", lambda e: e.totals.bad_result == 1)
    assert entry.scores["math"].bad == pytest.approx(2.0)
    assert entry.scores["math"].good == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(TaskNotFound):
        await board.mark_bad("r-missing", "no such task")
    await board.submit(Task(id="open", kind="work"))
    with pytest.raises(InvalidTask, match="only a done task"):
        await board.mark_bad("open", "not even done")


async def test_garbage_in_shared_state_is_repaired_recorded_and_loses_no_task(
    board: TaskBoard, nats_server: EmbeddedServer
) -> None:
    js = board.nc.jetstream()
    await board.submit_many([Task(id=f"c{i}", kind="work") for i in range(4)])
    # The vandal: garbage over a task record, a malformed ticket and a malformed trail event.
    revision = (await board.tasks.get("c0")).revision  # type: ignore[union-attr]
    await board.tasks.update("c0", b'{"status": "done", "result": "forged"', last=revision)
    await js.publish("ants.work.any", b"{not a ticket")
    await js.publish("ants.trail.task.completed.c3", b"{not an event")

    recorder = Recorder()
    config = BoardConfig(lease_ttl=1.0, card_ttl=TEST_CARD_TTL)
    async with TaskBoard.connect(nats_server.url, config) as honest_board, swarm(honest_board, recorder, 2):
        seen: list[str] = []
        async for event in honest_board.trail.follow("ants.trail.task.completed.>"):
            seen.append(event.ref)  # the follower skips the bad event and keeps going
            if len(seen) == 4:
                break
        final = await honest_board.wait([f"c{i}" for i in range(4)], timeout=30)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert recorder.runs == {f"c{i}": 1 for i in range(4)}
    assert final["c0"].result == {"task": "c0", "agent": final["c0"].attempts[-1].agent}
    recorded: dict[str, list[str]] = {}
    for event in await board.trail.replay("ants.trail.corrupt.>"):
        recorded.setdefault(event.kind, []).append(event.ref)
    assert recorded["corrupt.task"] == ["c0"]
    assert len(recorded["corrupt.ticket"]) == 1
    assert len(recorded["corrupt.event"]) == 1

    # Garbage in a direct holder's lease key: the next claimant meets it, removes it and records it.
    await board.submit(Task(id="d1", kind="work"))
    assert isinstance(await board.claim("d1", "holder"), Lease)
    await board.leases.put(lease_key("d1", "holder"), b"\x00garbage")
    assert await board.claim("d1", "direct") == NotTaken("d1", "held", retry_after=0.0)
    assert isinstance(await board.claim("d1", "direct"), Lease)
    dropped = [e.ref for e in await board.trail.replay("ants.trail.corrupt.lease.>")]
    assert dropped == ["d1"]


async def test_forged_and_altered_events_fail_verification(board: TaskBoard) -> None:
    async def confirmed(task: Task, ctx: TaskContext) -> JsonValue:
        await ctx.confirm()  # written at once, so both its claim and its completion are signed events
        return "ok"

    honest = Agent(board, name="honest")
    honest.handler("work")(confirmed)
    async with honest:
        await board.submit(Task(id="v", kind="work"))
        await board.wait(["v"], timeout=20)
        await until_event(board, "task.completed", "v")
        verifier = Verifier(board.directory)
        seen: set[int | None] = set()
        genuine = [e for e in await board.trail.history("v") if e.by == honest.id]
        checks = {e.kind: await verifier.check(e) for e in genuine}
        assert checks == {"task.claimed": "verified", "task.completed": "verified"}

        # The signature is in the headers, over the message as stored; the body carries none.
        assert all(e.sig is None and e.signer is None for e in genuine)
        impostor = Identity.generate()
        await board.trail.emit(
            TrailEvent(kind="task.completed", ref="v", agent=honest.id, by=honest.id, data="fake"),
            signer=impostor,
        )
        (forged,) = [e for e in await board.trail.history("v") if e.data == "fake"]
        altered = genuine[-1].model_copy(update={"data": {"kind": "work", "requires": ["root"]}})
        unsigned = TrailEvent(kind="task.completed", ref="v", agent=honest.id, by=honest.id)
        assert await verifier.check(forged) == "forged"
        assert await verifier.check(altered) == "forged"
        assert await verifier.check(unsigned) == "forged"
        # Deprecated, verified for one more release: a signature in the body, over signed_bytes().
        old = TrailEvent(kind="task.progress", ref="v", agent=honest.id, by=honest.id, data="old")
        old = old.model_copy(update={"signer": honest.identity.public_key})
        for key, outcome in ((honest.identity, "verified"), (impostor, "forged")):
            await board.trail.emit(old.model_copy(update={"sig": key.sign(old.signed_bytes())}))
            (read,) = [e for e in await board.trail.history("v") if e.data == "old" and e.seq not in seen]
            seen.add(read.seq)
            assert read.stored is not None and read.sig is not None
            assert await verifier.check(read) == outcome
        joined = (await board.trail.replay(f"ants.trail.agent.joined.{honest.id}.*"))[0]
        assert await verifier.check(joined) == "verified"
    # Its card is withdrawn: a verifier that never read it has nothing to check against, while one
    # that read it a moment ago still knows the key (for key_cache_s).
    assert await Verifier(board.directory).check(genuine[0]) == "unknown"
    assert await verifier.check(genuine[0]) == "verified"


def test_identities_round_trip_through_their_seed() -> None:
    identity = Identity.generate()
    again = Identity.from_seed(identity.seed)
    assert again.public_key == identity.public_key and identity.public_key.startswith("U")
    with pytest.raises(AntsError):
        Identity.from_seed("SUnot-a-seed")


async def test_the_ledger_ignores_forged_events_and_can_be_rebuilt_from_the_trail(board: TaskBoard) -> None:
    honest = Agent(board, name="honest", capabilities=["cpu"])
    honest.handler("work")(Recorder().handle)
    impostor = Identity.generate()
    async with honest, ledger_running(board):
        # A forger tries to buy the honest agent a bad name with fake failures.
        for i in range(3):
            fake = TrailEvent(
                kind="task.failed",
                ref=f"x{i}",
                agent=honest.id,
                by=honest.id,
                seq=None,
                data={"requires": ["cpu"]},
            )
            await board.trail.emit(fake, signer=impostor)
        await board.submit(Task(id="real", kind="work", requires=("cpu",)))
        stored = await until_ledger(board, honest.id, lambda e: e.totals.completed == 1)
        forged = await board.trail.replay("ants.trail.corrupt.forged.>")
        # Rebuilding from scratch (while the agent's key is still announced): the same ledger.
        rebuilt = AgentLedger(agent=honest.id)
        verifier = Verifier(board.directory)
        for event in await board.trail.replay("ants.trail.task.>"):
            if accountable(event) == honest.id and await verifier.check(event) != "forged":
                rebuilt = apply(rebuilt, event, half_life=board.config.reputation.half_life) or rebuilt
    assert stored.totals.failed == 0
    assert len(forged) == 3
    assert rebuilt.totals == stored.totals
    assert rebuilt.scores["cpu"].good == pytest.approx(stored.scores["cpu"].good)


async def abandon(board: TaskBoard, agent: str, task_ids: list[str]) -> None:
    """Real abandoned claims: ``agent`` claims each task directly and vanishes; once the server has
    expired its lease keys, a claimant notices (the board records the expiries) and lets go."""
    kv = await board.nc.jetstream().key_value("ants_leases")
    for task_id in task_ids:
        assert isinstance(await board.claim(task_id, agent), Lease)
    for task_id in task_ids:
        watcher = await kv.watch(lease_key(task_id, agent))
        async for entry in watcher:  # the server's expiry marker is the event we wait for
            if entry is not None and entry.operation is not None:
                break
        await watcher.stop()
        finder = await board.claim(task_id, "finder")
        assert isinstance(finder, Lease)
        await board.release(finder)


async def test_a_quarantined_agent_recovers_on_probation(board: TaskBoard) -> None:
    config = board.config.reputation
    async with ledger_running(board):
        # History: two abandoned claims put "lonely" in quarantine for "cpu".
        await board.submit_many([Task(id=f"old{i}", kind="work", requires=("cpu",)) for i in range(2)])
        await abandon(board, "lonely", ["old0", "old1"])
        await until_ledger(board, "lonely", lambda e: e.totals.expired == 2)
        fresh = Reputation(board.nc, config)
        assert await fresh.quarantined("lonely", ["cpu"]) == ["cpu"]
        refused = await board.claim("old0", "lonely")
        assert isinstance(refused, NotTaken) and refused.reason == "quarantined"
        # Nobody else is around: after probation_after offers the ticket is its to take.
        lonely = Agent(board, name="lonely", agent_id="lonely", capabilities=["cpu"], decline_backoff=0.1)
        lonely.handler("work")(Recorder().handle)
        async with lonely:
            final = await board.wait(["old0", "old1"], timeout=30)
        entry = await until_ledger(board, "lonely", lambda e: e.totals.completed == 2)
    assert {r.status for r in final.values()} == {TaskStatus.DONE}
    assert (
        entry.scores["cpu"].value(entry.scores["cpu"].at or final["old0"].updated_at, config.half_life) >= 0.5
    )


async def test_probation_never_spends_a_tasks_last_attempt(board: TaskBoard) -> None:
    async with ledger_running(board):
        await board.submit_many([Task(id=f"old{i}", kind="work", requires=("cpu",)) for i in range(2)])
        await abandon(board, "shaky", ["old0", "old1"])
        await until_ledger(board, "shaky", lambda e: e.totals.expired == 2)
    await board.submit_many(
        [
            Task(id="roomy", kind="work", requires=("cpu",), max_attempts=3),
            Task(id="final", kind="work", requires=("cpu",), max_attempts=1),
        ]
    )
    assert isinstance(await board.claim("roomy", "shaky", probation=True), Lease)
    refused = await board.claim("final", "shaky", probation=True)
    assert isinstance(refused, NotTaken) and refused.quarantined == ("cpu",)


# ---------------------------------------------------------------- attacks with an agent's write access


async def _until_rejected(board: TaskBoard, why: str, count: int) -> list[TrailEvent]:
    """The first ``count`` events the ledger left out as ``corrupt.<why>``."""
    seen: list[TrailEvent] = []
    async with asyncio.timeout(20), aclosing(board.trail.follow(f"ants.trail.corrupt.{why}.>")) as events:
        async for event in events:
            seen.append(event)
            if len(seen) == count:
                return seen
    raise AssertionError("follow ended")


async def test_outcomes_the_board_does_not_back_count_for_nothing(board: TaskBoard) -> None:
    honest = Agent(board, name="honest", capabilities=["cpu"])
    honest.handler("work")(Recorder().handle)
    departed = Identity.generate()
    async with honest, ledger_running(board) as ledger:
        await board.submit(Task(id="real", kind="work", requires=("cpu",)))
        await until_ledger(board, honest.id, lambda e: e.totals.completed == 1)
        real = await board.get("real")
        attempt = real.attempts[-1]
        cpu = {"requires": ["cpu"]}
        fakes = [
            # Unsigned failures naming an honest agent whose handlers never fail ...
            TrailEvent(kind="task.failed", ref="real", agent=honest.id, token=attempt.token, data=cpu),
            TrailEvent(kind="task.failed", ref="real", agent=honest.id, token=attempt.token + 7, data=cpu),
            TrailEvent(kind="task.failed", ref="nowhere", agent=honest.id, token=1, data=cpu),
            # ... completions credited to a ghost that never existed ...
            TrailEvent(kind="task.completed", ref="real", agent="ghost", token=attempt.token, data=cpu),
            TrailEvent(kind="task.completed", ref="nowhere", agent="ghost", token=3, data=cpu),
            # ... and an outcome an agent with no live card (it left) signed for itself.
            TrailEvent(kind="task.completed", ref="real", agent="departed", by="departed", token=1, data=cpu),
        ]
        for fake in fakes:
            signer = departed if fake.by == "departed" else None
            await board.trail.emit(fake, signer=signer)
        rejected = await _until_rejected(board, "unbacked", len(fakes))
        after = await ledger.get(honest.id)
        ghost = await ledger.get("ghost")
        gone = await ledger.get("departed")
    assert after.totals.failed == 0 and after.totals.completed == 1
    assert ghost.totals == gone.totals == AgentLedger(agent="x").totals  # nothing counted
    assert [e.data["agent"] for e in rejected if isinstance(e.data, dict)] == [
        honest.id,
        honest.id,
        honest.id,
        "ghost",
        "ghost",
        "departed",
    ]


async def test_a_real_outcome_laid_again_counts_once(board: TaskBoard) -> None:
    honest = Agent(board, name="honest", capabilities=["cpu"])
    honest.handler("work")(Recorder().handle)
    async with honest, ledger_running(board) as ledger:
        await board.submit(Task(id="once", kind="work", requires=("cpu",)))
        await until_ledger(board, honest.id, lambda e: e.totals.completed == 1)
        (genuine,) = [e for e in await board.trail.history("once") if e.kind == "task.completed"]
        assert genuine.stored is not None
        subject, payload, headers = genuine.stored
        signature = {k: v for k, v in headers.items() if k in (SIGNER_HEADER, SIG_HEADER)}
        assert len(signature) == 2
        for _ in range(3):  # the very message, signature and all, laid again (and again)
            await publish(board.nc.jetstream(), subject, payload, headers=signature)
        replayed = await _until_rejected(board, "replayed", 3)
        after = await ledger.get(honest.id)
    assert after.totals.completed == 1
    assert {e.data["task"] for e in replayed if isinstance(e.data, dict)} == {"once"}


async def test_a_zombie_cannot_report_progress_on_a_reclaimed_task(board: TaskBoard) -> None:
    await board.submit(Task(id="z", kind="work"))
    zombie = await board.claim("z", "zombie")
    assert isinstance(zombie, Lease)
    await board.progress(zombie, 0.1, "still mine")
    kv = await board.nc.jetstream().key_value("ants_leases")
    watcher = await kv.watch(lease_key("z", "zombie"))
    async for entry in watcher:  # the server's expiry marker
        if entry is not None and entry.operation is not None:
            break
    await watcher.stop()
    fresh = await board.claim("z", "fresh")
    assert isinstance(fresh, Lease)
    with pytest.raises(LeaseLost):
        await board.progress(zombie, 0.9, "a stale token")
    await board.progress(fresh, 0.5, "the real holder")
    progress = [(e.agent, e.data) for e in await board.trail.history("z") if e.kind == "task.progress"]
    assert progress == [
        ("zombie", {"fraction": 0.1, "note": "still mine"}),
        ("fresh", {"fraction": 0.5, "note": "the real holder"}),
    ]


async def test_a_record_flooded_past_its_history_is_quarantined_clearly(board: TaskBoard) -> None:
    await board.submit(Task(id="flooded", kind="work"))
    for i in range(board.config.task_history + 1):  # every valid revision pushed out
        await board.tasks.put("flooded", b"garbage %d" % i)
    with pytest.raises(CorruptEntry, match="'flooded' is quarantined: all 5 kept revisions"):
        await board.get("flooded")
    with pytest.raises(CorruptEntry):
        await board.claim("flooded", "someone")
    (event,) = await board.trail.replay("ants.trail.corrupt.quarantined.>")
    assert event.ref == "flooded"
    # Other tasks are untouched, and agents drop the quarantined task's ticket instead of looping.
    recorder = Recorder()
    await board.submit(Task(id="fine", kind="work"))
    async with swarm(board, recorder, 1):
        assert (await board.wait(["fine"], timeout=20))["fine"].status is TaskStatus.DONE
    assert recorder.runs == {"fine": 1}


# ---------------------------------------------------------------- the same, where access control is on


async def test_nobody_can_forge_the_expiry_of_another_agents_lease(secured: EmbeddedServer) -> None:
    async with (
        TaskBoard.connect(secured.url, seed=ANT_A.seed) as board,
        TaskBoard.connect(secured.url, seed=RIVAL.seed) as rival,
    ):
        await board.submit(Task(id="mine", kind="work"))
        lease = await board.claim("mine", "ant-a")
        assert isinstance(lease, Lease)
        # The rival writes a server-style expiry marker over ant-a's lease key: the server refuses.
        forged = {"Nats-Marker-Reason": "MaxAge", "KV-Operation": "PURGE"}
        subject = f"$KV.ants_leases.{lease_key('mine', 'ant-a')}"
        with pytest.raises(PermissionDenied):
            await publish(rival.nc.jetstream(), subject, b"", headers=forged)
        held = await rival.claim("mine", "ant-b")
        assert isinstance(held, NotTaken) and held.reason == "held" and held.holder == "ant-a"
        done = await board.complete(lease, "still mine")
    assert [(a.agent, a.outcome) for a in done.attempts] == [("ant-a", "completed")]


async def test_only_the_ledger_service_writes_the_ledger(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=ANT_A.seed) as board:
        flattering = AgentLedger(agent="ant-a", totals=Counts(completed=1000)).model_dump_json().encode()
        with pytest.raises(PermissionDenied, match="ants_ledger"):
            await Bucket(board.nc.jetstream(), "ants_ledger").put("ant-a", flattering)
    async with connect(secured.url, seed=LEDGER.seed) as nc:
        ledger = Ledger(nc)
        assert await ledger._update("ant-a", lambda entry: entry.model_copy(update={"last_seq": 1}))
        assert (await ledger.get("ant-a")).totals.completed == 0


async def test_an_agent_lays_trail_events_in_its_own_name_only(secured: EmbeddedServer) -> None:
    async with TaskBoard.connect(secured.url, seed=RIVAL.seed) as rival:
        js = rival.nc.jetstream()
        framing = TrailEvent(kind="task.failed", ref="t", agent="ant-a", by="ant-a", token=1)
        # On ant-a's subject: the server refuses it.
        with pytest.raises(PermissionDenied, match=r"ants\.trail\.task\.failed\.t\.ant-a"):
            await publish(js, trail_subject("task.failed", "t", "ant-a"), framing.model_dump_json().encode())
        # On its own subject but naming ant-a as author: stored, and dropped by every reader.
        await publish(js, trail_subject("task.failed", "t", "ant-b"), framing.model_dump_json().encode())
        # In its own name, or naming nobody: laid, and read.
        await rival.trail.emit(
            TrailEvent(kind="task.failed", ref="t", agent="ant-a", by="ant-b"), signer=RIVAL
        )
        await rival.trail.mark("graffiti", key="wall")
        events = await rival.trail.replay("ants.trail.>")
    assert [(e.kind, e.by) for e in events if e.kind in ("task.failed", "mark.graffiti")] == [
        ("task.failed", "ant-b"),
        ("mark.graffiti", None),
    ]


async def test_a_forged_expiry_of_a_direct_claim_is_seen_for_what_it_is(board: TaskBoard) -> None:
    # No access control here: anyone may write a server-style expiry marker over a holder's lease
    # key. The deletion comes before the lease could have run out, so nobody takes it for one.
    await board.submit(Task(id="kept", kind="work", max_attempts=3))
    holder = await board.claim("kept", "holder")
    assert isinstance(holder, Lease)
    forged = {"Nats-Marker-Reason": "MaxAge", "KV-Operation": "PURGE"}
    for _ in range(3):  # three in a row once made the task dead
        await publish(
            board.nc.jetstream(), f"$KV.ants_leases.{lease_key('kept', 'holder')}", b"", headers=forged
        )
        taken = await board.claim("kept", "rival")
        assert isinstance(taken, NotTaken) and taken.reason == "held" and taken.holder == "holder"
        await board.heartbeat(holder)  # the holder puts its key back: nobody had taken over
    done = await board.complete(holder, "mine")
    assert [(a.agent, a.outcome) for a in done.attempts] == [("holder", "completed")]
    noticed = [e.data for e in await board.trail.replay("ants.trail.corrupt.lease.>")]
    assert noticed == [{"holder": "holder", "deleted_early": True}] * 3


@pytest.mark.parametrize("landed", [False, True], ids=["lost", "landed-unanswered"])
async def test_a_claim_whose_event_the_trail_did_not_confirm_is_counted_once(
    board: TaskBoard, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """A written claim whose ``task.claimed`` the trail did not confirm (a fault) is reported by its
    outcome (``deferred``), and the ledger counts the claim once, whether the event was lost or
    landed unanswered."""
    emit = board.trail.emit

    async def flaky_emit(event: TrailEvent, **kwargs: Any) -> int:
        if event.kind == "task.claimed":
            if landed:
                await emit(event, **kwargs)
            raise ServerUnavailable("append task.claimed to the trail: NATS server did not answer")
        return await emit(event, **kwargs)

    monkeypatch.setattr(board.trail, "emit", flaky_emit)
    agent = Agent(board, name="slow")

    @agent.handler("slow")
    async def slow(task: Task, ctx: TaskContext) -> JsonValue:
        await ctx.confirm()  # the claim is written (as after claim_after)
        return "done"

    async with ledger_running(board), agent:
        await board.submit(Task(id="c1", kind="slow"))
        assert await board.result("c1", timeout=10) == "done"
        completed = await until_event(board, "task.completed", "c1")
        assert isinstance(completed.data, dict) and completed.data.get("deferred") is True
        counted = await until_ledger(board, agent.id, lambda e: e.totals.completed == 1)
    assert counted.totals.claimed == 1
