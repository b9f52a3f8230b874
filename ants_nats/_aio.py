"""Cancellation that cannot get lost.

On Python 3.11, ``asyncio.wait_for`` (used throughout nats-py) swallows a cancellation that arrives
just as the awaited result does (CPython gh-86296): the task is marked as cancelling but keeps
running, so a naive shutdown can hang forever. Pull loops re-raise such a cancellation after each
pull (``honour_swallowed_cancel``); ``cancel_and_wait`` cancels again until the tasks have really
ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

IN_FLIGHT = 256
"""Requests a pipelined batch keeps outstanding at once (the client, not the server, is the limit)."""


async def gather_bounded(aws: Iterable[Awaitable[T]], limit: int = IN_FLIGHT) -> list[T]:
    """Await every awaitable with at most ``limit`` in flight; results in order.

    The first failure cancels what has not finished and is raised (nothing is left running).
    """
    aws = list(aws)
    if len(aws) == 1:
        # Awaited in place: a task of its own would cost a turn of the loop, whose flush would
        # send what the caller wrote before apart from what this writes (one send instead of two).
        return [await aws[0]]
    gate = asyncio.Semaphore(limit)

    async def bounded(aw: Awaitable[T]) -> T:
        async with gate:
            return await aw

    tasks = [asyncio.ensure_future(bounded(aw)) for aw in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        await cancel_and_wait(tasks)


def honour_swallowed_cancel() -> None:
    """Raise ``CancelledError`` if the current task was cancelled but a ``wait_for`` swallowed it
    (gh-86296): a loop that goes on otherwise would never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_RECANCEL_EVERY_S = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, re-cancelling any that swallowed it."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_EVERY_S)


async def stop_process(proc: asyncio.subprocess.Process, *, kill: bool = False, grace: float = 10.0) -> None:
    """End a child process: SIGTERM (or SIGKILL), then SIGKILL if it is still alive after ``grace``."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


@contextlib.contextmanager
def stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGINT or SIGTERM while inside (the way a long-running command ends cleanly,
    whether Ctrl-C, systemd or ``docker stop`` asks); off the main thread, where signals cannot be
    handled, it does nothing."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


_INTERRUPT_GRACE_S = 15.0
"""How long interrupted work has to clean up before it is cancelled again."""


async def interruptible(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end, unless SIGINT or SIGTERM comes first: then cancel it for good
    (re-cancelling while something inside swallows the cancellation, gh-86296) and raise
    ``KeyboardInterrupt``. asyncio's own Ctrl-C handling cancels once, so work that swallowed it
    ran on to its end as if nobody had asked."""
    task = asyncio.ensure_future(work)
    interrupted = asyncio.Event()
    with stopping_on_signals(interrupted.set):
        waiter = asyncio.ensure_future(interrupted.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([waiter])
            if not task.done():
                # Once, with time for its clean-up (stopping processes, a server); again only if
                # it swallowed that cancellation and runs on.
                task.cancel()
                await asyncio.wait({task}, timeout=_INTERRUPT_GRACE_S)
                await cancel_and_wait([task])
    if interrupted.is_set() and task.cancelled():
        raise KeyboardInterrupt
    return task.result()
