"""An LLM-style agent under a swarm-wide rate limit and a budget, its model call faked.

The agent's handler calls a fake model (no network): it reports the tokens each call used with
``ctx.usage``, and the first call meets the provider's own rate limit (``RateLimited``), which puts
the task back uncounted and holds the capability back for a second. The swarm-wide limit lets two
handler runs start in any two seconds; the batch's budget allows 400 tokens, so once four summaries
have spent it, the tasks not yet started fail unclaimed with the reason. Without ``--server`` it
starts its own embedded nats-server.

    .venv/bin/python examples/llm_agent.py [--server nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio
import time

from _run import run  # examples/_run.py: --server, else an embedded server
from pydantic import JsonValue

from ants_nats import (
    Agent,
    Budget,
    RateLimited,
    Task,
    TaskBoard,
    TaskContext,
    TaskStatus,
)

TOKENS_IN, TOKENS_OUT = 100, 20  # what one fake call costs
started = time.monotonic()
calls: list[float] = []


async def fake_model(prompt: str) -> str:
    """Stands in for a provider's API: the first call is refused with a 429, the others answer."""
    calls.append(time.monotonic() - started)
    if len(calls) == 1:
        raise RateLimited("provider said 429", retry_after=1)
    await asyncio.sleep(0.05)
    return f"a summary of {prompt!r}"


async def summarise(task: Task, ctx: TaskContext) -> JsonValue:
    answer = await fake_model(str(task.payload))
    ctx.usage(tokens_in=TOKENS_IN, tokens_out=TOKENS_OUT)  # what the call spent, charged to the budget
    print(f"  {time.monotonic() - started:4.1f}s {task.id}: {answer}")
    return answer


async def main(url: str) -> int:
    async with TaskBoard.connect(url) as board:
        await board.set_limit("llm", requests=2, per=2.0)  # for every agent together
        agent = Agent(board, name="llm-agent", capabilities=["llm"], capacity=1)
        agent.handler("summarise")(summarise)
        tasks = [
            Task(id=f"doc-{i}", kind="summarise", requires=("llm",), payload=f"document {i}")
            for i in range(6)
        ]
        budget = Budget(id="summaries", tokens=400)
        async with agent:
            await board.submit_many(tasks, budget=budget)
            final = await board.wait([t.id for t in tasks], timeout=30)
        done = [r for r in final.values() if r.status == TaskStatus.DONE]
        refused = [r for r in final.values() if r.status == TaskStatus.FAILED]
        for record in refused:
            print(f"  {record.task.id}: failed unclaimed: {record.error}")
        spent = (await board.budget(budget.id)).spent
        print(f"model calls started at: {', '.join(f'{t:.1f}s' for t in calls)}")
        held = sum(a.outcome == "released" for r in final.values() for a in r.attempts)
        print(f"runs the provider rate-limited (put back, not counted as attempts): {held}")
        print(f"budget {budget.id!r}: spent {spent.tokens} of {budget.tokens} tokens")
        print(f"done {len(done)}/{len(tasks)}, refused for the budget {len(refused)}")
        return 0 if done and refused and len(done) + len(refused) == len(tasks) else 1


if __name__ == "__main__":
    run(main, __doc__)
