"""What a handler may raise to say how its attempt ends, other than by failing: every signal in
one place (``Decline``, ``NonRetryable``, ``RateLimited``, and ``AskingForInput``, which
``ctx.ask`` raises). The agent runtime (``attempt.py``) turns each into its ending."""

from __future__ import annotations

import math

from .errors import AntsError


class Decline(AntsError):
    """Raise from a handler to turn a task down: free (reputation counts no declines), not an
    attempt, and another agent takes it. The reason is noted on the record and on the trail.

    The decline stands while the agent's offer is unchanged; with ``retry_after`` (seconds) only
    that long: "not now" (a service it needs is away, it is busy), after which the task may come
    to it again. Once no agent able to take the task is left that has not declined it, the task
    is unroutable, saying why, until one comes (or, for a "not now", until the first lapses).
    """

    def __init__(self, reason: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        if retry_after is not None and not 0 < retry_after <= 86_400:
            raise ValueError(f"retry_after must be within (0, 86400] seconds, got {retry_after}")
        self.retry_after = retry_after


class NonRetryable(AntsError):
    """Raise from a handler when trying again cannot help: the task fails at once, for good
    (its dependents are blocked), with the message as its error."""


class RateLimited(AntsError):
    """A shared rate limit (or a provider's) allows no more now; try again in ``retry_after`` s.

    Raise it from a handler that met a provider's limit: the task goes back without counting as an
    attempt, and every agent holds the task's capabilities back until then.
    """

    def __init__(self, message: str = "rate limited", *, retry_after: float) -> None:
        # Between a second (a swarm retrying at once would only spin) and an hour (as long as a
        # hold lasts); a NaN or infinite one is taken as the hour.
        wanted = float(retry_after)
        self.retry_after = min(max(wanted, 1.0), 3600.0) if math.isfinite(wanted) else 3600.0
        super().__init__(f"{message} (retry after {self.retry_after:.3g}s)")


class AskingForInput(BaseException):
    """Raised by ``ctx.ask`` to park the task; the agent runtime catches it. A ``BaseException``,
    like ``CancelledError``, so that a handler's ``except Exception`` does not swallow it."""

    def __init__(self, question: str, timeout: float) -> None:
        super().__init__(question)
        self.question = question
        self.timeout = timeout
