"""The commands that act on tasks: ``submit``, ``retry``, ``get``, ``wait``, ``cancel``, ``answer``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..board import TaskBoard
from ..errors import UsageError
from ..models import TaskRecord, TaskStatus
from .command import command
from .output import show_task, show_tasks
from .task_input import document, not_before, task_arguments, task_from_flags

EXIT_NOT_DONE = 1
EXIT_TIMEOUT = 2
"""As any command that did not finish in time."""


class _Waited:
    """Waiting for tasks to finish: their final records, or when time ran out, those unfinished."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.ids: list[str] = []
        self.timed_out = False

    async def read(self, board: TaskBoard, ids: Sequence[str]) -> list[TaskRecord]:
        """The final records of ``ids``, or (time out) the unfinished tasks' records now: why they
        wait is what the caller wants to see then."""
        self.ids = list(ids)
        try:
            final = await board.wait(self.ids, timeout=self.timeout)
        except TimeoutError:
            self.timed_out = True
            now = [await board.get(task_id) for task_id in self.ids]
            return [record for record in now if not record.status.terminal]
        return [final[task_id] for task_id in self.ids]

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
    waited = _Waited(args.timeout) if args.wait else None

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
    async def read(board: TaskBoard) -> TaskRecord:
        record = await board.get(args.id)
        if record.result_ref is None:
            return record
        # Show the result itself, read from the artifact store.
        return record.model_copy(update={"result": await board.result_of(record)})

    return await show_task(args, read)


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
    waited = _Waited(args.timeout)

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
