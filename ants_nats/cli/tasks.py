"""The commands that act on tasks: ``submit``, ``retry``, ``get``, ``wait``, ``cancel``, ``answer``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from .._aio import cancel_and_wait, gather_bounded
from ..board import TaskBoard
from ..errors import AntsError, ArtifactNotFound, UsageError
from ..log import get_logger
from ..models import TaskRecord, TaskStatus
from ..waiting import why_waiting_many
from .command import command
from .output import show_task, show_tasks
from .task_input import document, not_before, task_arguments, task_from_flags

log = get_logger("cli")

EXIT_NOT_DONE = 1
EXIT_TIMEOUT = 2
"""As any command that did not finish in time."""


PROGRESS_AFTER_S = 2.0
"""How long a wait runs before it says, on stderr, what it waits for (quick tasks print nothing)."""
PROGRESS_EVERY_S = 30.0
"""How often a wait says it again."""
_NAMED = 3
"""Unfinished tasks a progress line names, with why each waits."""


class _Waited:
    """Waiting for tasks to finish: their final records, or when time ran out, those unfinished.
    A long wait says on stderr what it waits for and why (so a task nobody can take does not wait
    unseen), after ``PROGRESS_AFTER_S`` and every ``PROGRESS_EVERY_S`` after."""

    def __init__(self, args: argparse.Namespace) -> None:
        if args.timeout is not None and not args.timeout > 0:  # (nan included)
            raise UsageError(f"--timeout {args.timeout:g}: give a number of seconds above 0")
        self.timeout: float | None = args.timeout
        self.results = bool(args.json)
        """Whether results kept as artifacts are read (for JSON: a table says where they are)."""
        self.ids: list[str] = []
        self.timed_out = False

    async def read(self, board: TaskBoard, ids: Sequence[str]) -> list[TaskRecord]:
        """The final records of ``ids``, or (time out) the unfinished tasks' records now: why they
        wait is what the caller wants to see then."""
        self.ids = list(ids)
        reporting = asyncio.create_task(self._report(board), name="wait progress")
        try:
            final = await board.wait(self.ids, timeout=self.timeout)
        except TimeoutError:
            self.timed_out = True
            now = [await board.get(task_id) for task_id in self.ids]
            return [record for record in now if not record.status.terminal]
        finally:
            await cancel_and_wait([reporting])  # (a cancellation nats-py swallows is sent again)
        records = [final[task_id] for task_id in self.ids]
        return await gather_bounded(with_result(board, r) for r in records) if self.results else records

    async def _report(self, board: TaskBoard) -> None:
        """Say now and then how many tasks are unfinished, naming a few with why they wait."""
        started = time.monotonic()
        await asyncio.sleep(PROGRESS_AFTER_S)
        while True:
            try:
                records = await gather_bounded(board.get(task_id) for task_id in self.ids)
                unfinished = [record for record in records if not record.status.terminal]
                waiting = await why_waiting_many(board, unfinished[:_NAMED])
            except AntsError:  # (a task deleted, a server away: the wait itself says what it finds)
                unfinished = []
            if unfinished:
                named = [f"{key}: {why.text}" for key, why in waiting.items()]
                more = len(unfinished) - len(named)
                print(
                    f"waiting ({time.monotonic() - started:.0f}s) for {len(unfinished)} of {len(self.ids)} "
                    f"task(s): {'; '.join(named)}{f'; and {more} more' if more > 0 else ''}",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(PROGRESS_EVERY_S)

    def exit_status(self, args: argparse.Namespace, shown: Sequence[TaskRecord]) -> int:
        """0 when every task is done, 1 when any ended otherwise, 2 when time ran out first."""
        if self.timed_out:
            print(
                f"ants-nats: error: {args.command} did not finish in time: {len(shown)} of "
                f"{len(self.ids)} tasks unfinished, shown with why they wait",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        return 0 if all(r.status is TaskStatus.DONE for r in shown) else EXIT_NOT_DONE


def _submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="JSON or YAML (.yaml/.yml) file, or - for JSON on stdin")
    parser.add_argument("--id")
    task_arguments(parser)
    parser.add_argument("--depends-on", action="append", default=[], help="dependency id (repeatable)")
    parser.add_argument("--at", help="not before this time (ISO 8601 with a time zone)")
    parser.add_argument("--in", dest="after", help="not before this long from now (30s, 5m, 2h, 1d)")
    parser.add_argument(
        "--wait", action="store_true", help="wait until the tasks finish; exit 1 if any failed"
    )
    parser.add_argument("--timeout", type=float, default=None, help="with --wait: give up after S seconds")


@command(
    "submit",
    "submit tasks from a JSON or YAML file (a task or a list) or from flags",
    _submit_arguments,
    json_out=True,
)
async def submit(args: argparse.Namespace) -> int:
    tasks = _tasks_from(args)
    waited = _Waited(args) if args.wait else None

    if args.acting_as is not None:  # signed as --as: the tasks are theirs
        tasks = [{"created_by": args.acting_as, **t} if isinstance(t, dict) else t for t in tasks]

    async def read(board: TaskBoard) -> list[TaskRecord]:
        records = await board.submit_many(tasks)
        return records if waited is None else await waited.read(board, [r.task.id for r in records])

    shown = await show_tasks(args, read)
    return 0 if waited is None else waited.exit_status(args, shown)


def _tasks_from(args: argparse.Namespace) -> list[Any]:
    if args.file:
        data = document(args.file)
        return data if isinstance(data, list) else [data]
    if not (args.id and args.kind):
        raise UsageError("give a JSON file, or at least --id and --kind")
    task = task_from_flags(args)
    task.update(id=args.id, depends_on=args.depends_on, not_before=not_before(args.at, args.after))
    return [task]


def _task_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="task id")


@command("retry", "put a failed or dead task back with a fresh attempt budget", _task_id, json_out=True)
async def retry(args: argparse.Namespace) -> int:
    return await show_task(args, lambda board: board.retry(args.id, by=args.acting_as))


@command("get", "show one task's record and result", _task_id, json_out=True, creates=False)
async def get(args: argparse.Namespace) -> int:
    return await show_task(args, lambda board: _got(board, args.id))


async def _got(board: TaskBoard, task_id: str) -> TaskRecord:
    return await with_result(board, await board.get(task_id))


async def with_result(board: TaskBoard, record: TaskRecord) -> TaskRecord:
    """``record`` showing its result itself: one too big to be inline is read from the artifact
    store (what ``get`` and a wait print); one no longer there is left out, with a warning."""
    if record.result_ref is None:
        return record
    try:
        result = await board.result_of(record)
    except ArtifactNotFound as exc:
        log.warning("task.result_gone", task_id=record.task.id, error=str(exc))
        return record
    return record.model_copy(update={"result": result})


def _wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+", metavar="ID", help="task ids")
    parser.add_argument("--timeout", type=float, default=None, help="give up after S seconds (exit 2)")


@command(
    "wait",
    "wait until tasks finish: exit 0 if all are done, 1 if any is not",
    _wait_arguments,
    json_out=True,
    creates=False,
)
async def wait(args: argparse.Namespace) -> int:
    waited = _Waited(args)

    async def read(board: TaskBoard) -> list[TaskRecord]:
        for task_id in args.ids:
            await board.get(task_id)  # an unknown id is an error now, not a wait until the timeout
        return await waited.read(board, args.ids)

    return waited.exit_status(args, await show_tasks(args, read))


def _cancel_arguments(parser: argparse.ArgumentParser) -> None:
    _task_id(parser)
    parser.add_argument("--reason", default="cancelled from the command line")


@command("cancel", "cancel a pending, waiting or claimed task", _cancel_arguments, json_out=True)
async def cancel(args: argparse.Namespace) -> int:
    return await show_task(args, lambda board: board.cancel(args.id, args.reason, by=args.acting_as))


def _answer_arguments(parser: argparse.ArgumentParser) -> None:
    _task_id(parser)
    parser.add_argument("text", help="the answer")
    parser.add_argument("--by", default=None, help="who answers (kept in the record)")
    parser.add_argument(
        "--question", type=int, default=None, metavar="N", help="answer only if question N (from 0) is open"
    )


@command(
    "answer",
    "answer the question a task waits on (it becomes claimable again)",
    _answer_arguments,
    json_out=True,
)
async def answer(args: argparse.Namespace) -> int:
    return await show_task(
        args, lambda board: board.answer(args.id, args.text, question=args.question, by=args.by)
    )


COMMANDS = (submit, retry, get, wait, cancel, answer)
