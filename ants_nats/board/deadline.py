"""A wait's deadline: ``asyncio.timeout`` whose expiry says what was waited for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager

from ..errors import WaitTimeout


@asynccontextmanager
async def deadline(seconds: float | None, unfinished: Callable[[], Collection[str]]) -> AsyncIterator[None]:
    """Run the body for at most ``seconds`` (None: no limit); past them, ``WaitTimeout`` naming
    the tasks ``unfinished()`` gives then. A ``TimeoutError`` from within (not this deadline's)
    goes on as it is."""
    timer = asyncio.timeout(seconds)
    try:
        async with timer:
            yield
    except TimeoutError as exc:
        if not timer.expired():
            raise
        left = sorted(unfinished())
        named = ", ".join(repr(task_id) for task_id in left[:_NAMED])
        more = f" and {len(left) - _NAMED} more" if len(left) > _NAMED else ""
        raise WaitTimeout(f"not finished within {seconds:g} s: {named}{more}", left) from exc


_NAMED = 5
"""Unfinished tasks a timeout's message names (all are in ``WaitTimeout.unfinished``)."""
