"""The exception hierarchy: every error ants-nats raises on purpose is an ``AntsError``."""

from __future__ import annotations


class AntsError(Exception):
    """Root of every error raised by ants-nats."""


class ServerUnavailable(AntsError):
    """The NATS server cannot be reached (or JetStream is not enabled on it)."""


class ServerStartError(AntsError):
    """An embedded ``nats-server`` process could not be started."""


class UsageError(AntsError):
    """The command line was used wrongly: a flag missing, flags that do not go together, or a flag's
    value that cannot be read. Nothing was done."""


class NotFound(AntsError):
    """What was asked for by its id or name does not exist (any more): a task, a schedule, an
    artifact, a rate limit or a budget."""


class BoardNotFound(NotFound):
    """A reader (``TaskBoard.open(..., create=False)``) found no board on the server: nothing has
    set one up yet."""


class InvalidTask(AntsError):
    """A task (or a batch of tasks) failed validation; nothing was written."""


class PayloadTooLarge(InvalidTask):
    """A payload or result is larger than the board accepts."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes of JSON; the limit is {limit} bytes")
        self.size = size
        self.limit = limit


class TaskExists(InvalidTask):
    """A task with this id is already on the board."""


class UnknownDependency(InvalidTask):
    """A task depends on an id that is neither on the board nor in the same submission."""


class DependencyCycle(InvalidTask):
    """The dependencies of a submission form a cycle."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class InvalidSchedule(AntsError):
    """A schedule failed validation (its name, timing or task template); nothing was written."""


class ScheduleNotFound(NotFound):
    """No schedule with this name exists."""


class TaskNotFound(NotFound):
    """No task with this id exists on the board."""


class WaitTimeout(AntsError, TimeoutError):
    """A wait for tasks (``wait``, ``result``, ``run``, ``endings``) ran out of time first; the
    tasks still unfinished then are ``unfinished``. It is a ``TimeoutError`` as well."""

    def __init__(self, message: str, unfinished: list[str]) -> None:
        super().__init__(message)
        self.unfinished = unfinished


class TaskFinished(AntsError):
    """The task has already finished (done, failed or dead), so it cannot be changed that way."""


class TaskFailed(AntsError):
    """A task ended without a result (failed, dead, or blocked by a dependency); ``record`` says how."""

    def __init__(self, message: str, record: object) -> None:
        super().__init__(message)
        self.record = record


class TaskCancelled(TaskFailed):
    """A task was cancelled before it produced a result; ``record.error`` holds the reason."""


class ArtifactNotFound(NotFound):
    """An artifact is not in the store (never written, removed, or expired)."""


class LeaseLost(AntsError):
    """The caller's lease (fencing token) is no longer the current one; nothing was changed."""


class CorruptEntry(AntsError):
    """A value read from a bucket does not validate against its wire model."""


class PermissionDenied(AntsError):
    """The NATS server refused an operation under this connection's permissions."""


class NotYours(AntsError):
    """On a signed board, a change its signer may not make (another's task cancelled, say): every
    reader would undo it, so it is not written."""


class BudgetNotFound(NotFound):
    """No budget with this id exists."""


class BudgetExhausted(AntsError):
    """A submission's budget of tokens or cost is spent: its unfinished tasks fail with this reason."""


class NotWaiting(AntsError):
    """The task is not waiting for input, so it cannot be answered."""


class AgentProtocolError(AntsError):
    """The Synadia Agent Protocol could not be spoken: its SDKs are not installed (the
    ``agent-protocol`` extra), or a protocol agent answered with an error (``code``: its §9
    status, e.g. 500; None when the stream itself broke)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LimitNotFound(NotFound):
    """No rate limit is set on this capability."""
