"""A single agent doing tasks: the smallest swarm there is.

One agent with the capability ``text`` handles tasks of kind ``shout``; five tasks are submitted and
waited for. Without ``--server`` it starts its own embedded nats-server.

    .venv/bin/python examples/single_agent.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

from _run import run  # examples/_run.py: --server, else an embedded server
from pydantic import JsonValue

from ants_nats import Agent, Task, TaskBoard, TaskContext, TaskStatus


async def shout(task: Task, ctx: TaskContext) -> JsonValue:
    """The handler: what a task of kind ``shout`` does with its payload."""
    return str(task.payload).upper() + "!"


async def main(url: str) -> int:
    async with TaskBoard.connect(url) as board:
        agent = Agent(board, name="shouter", capabilities=["text"], capacity=2)
        agent.handler("shout")(shout)
        words = ["ants", "share", "work", "without", "a boss"]
        tasks = [
            Task(id=f"shout-{i}", kind="shout", requires=("text",), payload=word)
            for i, word in enumerate(words)
        ]
        async with agent:  # the agent works while the block runs, then stops gracefully
            await board.submit_many(tasks)
            final = await board.wait([t.id for t in tasks], timeout=30)
        for task in tasks:
            record = final[task.id]
            print(f"{task.id}: {record.status.value} -> {record.result!r}")
        done = sum(r.status == TaskStatus.DONE for r in final.values())
        print(f"done {done}/{len(tasks)}")
        return 0 if done == len(tasks) else 1


if __name__ == "__main__":
    run(main, __doc__)
