"""An adversarial agent being quarantined: reputation computed from the trail, with no scheduler.

``freeloader`` claims tasks and abandons them: its leases run out on the server, an honest agent
takes the work over and does it, and the ledger (folding the trail into scores, believing only what
the task records back) counts each abandoned claim against the freeloader. Two abandoned claims put
its score below the quarantine line: its next claim is refused, and no task is lost. Without
``--server`` it starts its own embedded nats-server.

    .venv/bin/python examples/adversary.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio

from _run import run  # examples/_run.py: --server, else an embedded server
from pydantic import JsonValue

from ants_nats import (
    Agent,
    BoardConfig,
    Lease,
    Ledger,
    NotTaken,
    Reputation,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
    Verifier,
)

FREELOADER = "freeloader"


async def work(task: Task, ctx: TaskContext) -> JsonValue:
    return f"{task.id} done by {ctx.lease.agent_id.rsplit('-', 1)[0]}"


async def until_ledger(ledger: Ledger, agent: str, expired: int) -> tuple[int, int, int]:
    """Watch the ledger until ``agent``'s entry counts ``expired`` abandoned claims; then its claims,
    abandoned claims and completions."""
    async for key, entry in ledger.watch():
        if key == agent and entry is not None and entry.totals.expired >= expired:
            return entry.totals.claimed, entry.totals.expired, entry.totals.completed
    raise RuntimeError("the ledger's watch ended")


async def main(url: str) -> int:
    config = BoardConfig(lease_ttl=1.5)  # short leases, so abandoned claims expire quickly
    async with TaskBoard.connect(url, config) as board:
        # The ledger service, in-process here (in production: the ants-ledger command).
        ledger = Ledger(board.nc, half_life=config.reputation.half_life)
        await ledger.ensure()
        projector = asyncio.create_task(ledger.project(board.trail, verifier=Verifier(board.directory)))

        tasks = [Task(id=f"job-{i}", kind="work", requires=("cpu",)) for i in range(4)]
        await board.submit_many(tasks)
        # The freeloader grabs two tasks before anyone else is around, then never comes back.
        for task in tasks[:2]:
            lease = await board.claim(task.id, FREELOADER)
            assert isinstance(lease, Lease)
            print(f"{FREELOADER} claimed {task.id} and walked away")

        honest = Agent(board, name="honest", capabilities=["cpu"], capacity=2)
        honest.handler("work")(work)
        async with honest:
            final = await board.wait([t.id for t in tasks], timeout=30)
            claimed, abandoned, completed = await until_ledger(ledger, FREELOADER, expired=2)
        scores = await Reputation(board.nc, config.reputation).scores(FREELOADER, ["cpu"])
        print(
            f"ledger: {FREELOADER} claimed {claimed}, abandoned {abandoned}, completed {completed}; "
            f"score for cpu {scores['cpu']:.2f} (quarantined below {config.reputation.quarantine_below})"
        )
        # A fresh task, and nobody else around: the freeloader tries again, and the board refuses it.
        await board.submit(Task(id="job-late", kind="work", requires=("cpu",)))
        refused = await board.claim("job-late", FREELOADER)
        if isinstance(refused, NotTaken):
            print(f"{FREELOADER} tried to claim job-late: refused ({refused.reason})")
        # An honest agent comes back and does it.
        honest = Agent(board, name="honest", capabilities=["cpu"], capacity=2)
        honest.handler("work")(work)
        async with honest:
            late = await board.wait(["job-late"], timeout=30)
        projector.cancel()
        await asyncio.gather(projector, return_exceptions=True)

        everything = {**final, **late}
        for task_id, record in sorted(everything.items()):
            tries = ", ".join(f"{a.agent.rsplit('-', 1)[0]}:{a.outcome}" for a in record.attempts)
            print(f"{task_id:<9} {record.status.value:<5} attempts: {tries}")
        done = sum(r.status == TaskStatus.DONE for r in everything.values())
        print(f"done {done}/{len(everything)}")
        quarantined = isinstance(refused, NotTaken) and refused.reason == "quarantined"
        print(f"{FREELOADER} quarantined: {'yes' if quarantined else 'no'}")
        return 0 if quarantined and done == len(everything) else 1


if __name__ == "__main__":
    run(main, __doc__)
