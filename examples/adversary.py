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
import contextlib
import secrets

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
    TaskNotFound,
    TaskStatus,
    Verifier,
)

FREELOADER = "freeloader"
"""The freeloader's id (with a suffix of its own when run again on a board that remembers it)."""


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

        # Run again on the same server (--server), the board remembers the last run's tasks and
        # freeloader (reputation persists): this run gets ids of its own.
        suffix = ""
        with contextlib.suppress(TaskNotFound):
            await board.get("job-0")
            suffix = f"-{secrets.token_hex(2)}"
            print(f"(an earlier run's tasks are on this board: this run's ids end in {suffix})")
        freeloader = f"{FREELOADER}{suffix}"
        tasks = [Task(id=f"job-{i}{suffix}", kind="work", requires=("cpu",)) for i in range(4)]
        await board.submit_many(tasks)
        # The freeloader grabs two tasks before anyone else is around, then never comes back.
        for task in tasks[:2]:
            lease = await board.claim(task.id, freeloader)
            assert isinstance(lease, Lease)
            print(f"{freeloader} claimed {task.id} and walked away")

        honest = Agent(board, name="honest", capabilities=["cpu"], capacity=2)
        honest.handler("work")(work)
        async with honest:
            final = await board.wait([t.id for t in tasks], timeout=30)
            claimed, abandoned, completed = await until_ledger(ledger, freeloader, expired=2)
        scores = await Reputation(board.nc, config.reputation).scores(freeloader, ["cpu"])
        print(
            f"ledger: {freeloader} claimed {claimed}, abandoned {abandoned}, completed {completed}; "
            f"score for cpu {scores['cpu']:.2f} (quarantined below {config.reputation.quarantine_below})"
        )
        # A fresh task, and nobody else around: the freeloader tries again, and the board refuses it.
        late_id = f"job-late{suffix}"
        await board.submit(Task(id=late_id, kind="work", requires=("cpu",)))
        refused = await board.claim(late_id, freeloader)
        if isinstance(refused, NotTaken):
            print(f"{freeloader} tried to claim {late_id}: refused ({refused.reason})")
        # An honest agent comes back and does it.
        honest = Agent(board, name="honest", capabilities=["cpu"], capacity=2)
        honest.handler("work")(work)
        async with honest:
            late = await board.wait([late_id], timeout=30)
        projector.cancel()
        await asyncio.gather(projector, return_exceptions=True)

        everything = {**final, **late}
        for task_id, record in sorted(everything.items()):
            tries = ", ".join(f"{a.agent.rsplit('-', 1)[0]}:{a.outcome}" for a in record.attempts)
            print(f"{task_id:<9} {record.status.value:<5} attempts: {tries}")
        done = sum(r.status == TaskStatus.DONE for r in everything.values())
        print(f"done {done}/{len(everything)}")
        quarantined = isinstance(refused, NotTaken) and refused.reason == "quarantined"
        print(f"{freeloader} quarantined: {'yes' if quarantined else 'no'}")
        return 0 if quarantined and done == len(everything) else 1


if __name__ == "__main__":
    run(main, __doc__)
