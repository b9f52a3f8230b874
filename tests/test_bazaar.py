"""A bazaar across owners (issue "A bazaar across owners and sites", point 2): each owner's agents in
an account of its own, the board in a board account exporting exactly what working it needs.
Generated with ``ants-nats config --owner ...`` and run on a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import JsonValue

from ants_nats import (
    Agent,
    AgentCard,
    EmbeddedServer,
    Identity,
    InvalidTask,
    PermissionDenied,
    Task,
    TaskBoard,
    TaskContext,
    TrailEvent,
    read_seed,
)
from ants_nats.access import BOARD_ACCOUNT, bazaar_config, owner_account
from ants_nats.ledger import Ledger

from .helpers import until_ledger, until_tasks
from .test_cli import run_cli
from .test_trust import ledger_running


async def test_owners_in_their_own_accounts_work_one_board_and_none_passes_for_another(
    tmp_path: Path,
) -> None:
    auth = tmp_path / "auth"
    made = await asyncio.to_thread(
        run_cli,
        *("config", "--owner", "alice=ant", "--owner", "bob=ant,helper"),
        *("--ledger", "ledger", "--observer", "watcher", "--out", str(auth)),
    )
    assert made.returncode == 0, made.stderr
    # Each owner is handed a directory with its own seeds only; the board's users have theirs.
    assert {p.name for p in (auth / "alice").iterdir()} == {"alice-ant.seed"}
    assert {p.name for p in (auth / "bob").iterdir()} == {"bob-ant.seed", "bob-helper.seed"}
    assert {p.name for p in (auth / "board").iterdir()} == {"ledger.seed", "watcher.seed"}
    accounts = json.loads((auth / "nats-server.conf").read_text())["accounts"]
    assert set(accounts) == {BOARD_ACCOUNT, owner_account("alice"), owner_account("bob")}
    assert "jetstream" not in accounts[owner_account("alice")]  # the board lives in one account only

    def seed(path: str) -> str:
        return read_seed(auth / path)

    async with (
        EmbeddedServer(extra_args=["-c", str(auth / "nats-server.conf")]) as server,
        TaskBoard.connect(server.url, name="alice", seed=seed("alice/alice-ant.seed")) as alice,
        TaskBoard.connect(server.url, name="bob", seed=seed("bob/bob-ant.seed")) as bob,
        TaskBoard.connect(server.url, name="ledger", seed=seed("board/ledger.seed")) as board_side,
        ledger_running(board_side),
    ):
        ant = Agent(
            alice, name="ant", agent_id="alice-ant", identity=Identity.from_seed(seed("alice/alice-ant.seed"))
        )

        @ant.handler("translate")
        async def translate(task: Task, ctx: TaskContext) -> JsonValue:
            return f"{task.payload} (by alice)"

        release = asyncio.Event()

        @ant.handler("ponder")
        async def ponder(task: Task, ctx: TaskContext) -> JsonValue:
            await ctx.confirm()  # the claim is written now: the record moves while it runs
            await release.wait()
            return "pondered"

        async with ant:
            # Bob follows the trail from his account (each event acknowledged by the request
            # for the next, across the accounts).
            heard: list[str] = []

            async def follow() -> None:
                async for event in bob.trail.follow("ants.trail.task.completed.>", new_only=True):
                    heard.append(event.ref)
                    if len(heard) == 2:  # (t3 comes later, unheard here)
                        return

            following = asyncio.create_task(follow())
            # Bob's task, done by Alice's agent, in another account: one board.
            assert (
                await bob.run(Task(id="t1", kind="translate", payload="hola"), timeout=20)
                == "hola (by alice)"
            )
            assert "alice-ant" in {c.id for c in await bob.directory.cards()}
            assert (
                await bob.run(Task(id="t2", kind="translate", payload="adios"), timeout=20)
                == "adios (by alice)"
            )
            await asyncio.wait_for(following, 20)
            assert heard == ["t1", "t2"]
            # A longer task: Bob hears nothing of it across the accounts (plain subjects stay in
            # an account), sees its record move, and waits on a watch of it instead.
            pondering = asyncio.create_task(bob.run(Task(id="t3", kind="ponder"), timeout=30))
            await asyncio.wait_for(until_tasks(bob, lambda r: "t3" in r and r["t3"].holder == ant.id), 20)
            release.set()
            assert await asyncio.wait_for(pondering, 20) == "pondered"
            await until_ledger(board_side, "alice-ant", lambda entry: entry.totals.completed == 3)

            # Bob cannot pass for Alice's agent: not its card, not its trail events; nor write the ledger.
            with pytest.raises(PermissionDenied, match=r"ants_agents\.alice-ant"):
                await bob.directory.announce(
                    AgentCard(id="alice-ant", name="x", load=0, capacity=1, software="x")
                )
            with pytest.raises(PermissionDenied):
                await bob.trail.emit(
                    TrailEvent(kind="task.failed", ref="t1", agent="alice-ant", by="alice-ant", data="framed")
                )
            with pytest.raises(PermissionDenied, match=r"ants_ledger"):
                credit = TrailEvent(kind="task.completed", ref="t1", agent="bob-ant", token=1, seq=10**6)
                await Ledger(bob.nc).record(credit)

        # Reputation is kept per agent and shown per owner.
        listed = await asyncio.to_thread(
            run_cli,
            "reputation",
            "--by-owner",
            "--json",
            "--server",
            server.url,
            "--creds",
            str(auth / "board/watcher.seed"),
        )
        assert listed.returncode == 0, listed.stderr
        standings = {row["owner"]: row for row in json.loads(listed.stdout)}
        assert standings["alice"]["agents"] == 1 and standings["alice"]["totals"]["completed"] == 3
        assert "bob" not in standings  # its agents did no work


def test_a_bazaar_config_refuses_what_would_blur_owners() -> None:
    key = Identity.generate().public_key
    with pytest.raises(InvalidTask, match="owner name"):
        bazaar_config({"al-ice": {"al-ice-ant": key}})
    with pytest.raises(InvalidTask, match="must be named alice-<name>"):
        bazaar_config({"alice": {"bob-ant": key}})  # an id that would say it is Bob's


async def test_config_takes_owners_or_plain_agents_not_both(tmp_path: Path) -> None:
    both = await asyncio.to_thread(
        run_cli, "config", "--owner", "alice=ant", "--agent", "loner", "--out", str(tmp_path)
    )
    assert both.returncode == 2 and "give no --agent" in both.stderr
    malformed = await asyncio.to_thread(run_cli, "config", "--owner", "alice", "--out", str(tmp_path))
    assert malformed.returncode == 2 and "expected OWNER=NAME" in malformed.stderr
    # The board's users' seeds have a folder of their own: no owner may be handed it.
    board = await asyncio.to_thread(run_cli, "config", "--owner", "board=ant", "--out", str(tmp_path))
    assert board.returncode == 2 and "the board's own users' folder" in board.stderr
