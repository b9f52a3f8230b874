"""ants-nats: leaderless work division for autonomous agents on NATS JetStream."""

from ._connect import connect
from ._version import __version__
from .agent import Agent, Decider
from .artifacts import Artifacts
from .board import BoardConfig, Lease, Taken, TaskBoard
from .cards import CardChange, Directory
from .context import Decline, Handler, NonRetryable, TaskContext
from .errors import (
    AntsError,
    ArtifactNotFound,
    CorruptEntry,
    DependencyCycle,
    InvalidSchedule,
    InvalidTask,
    LeaseLost,
    PayloadTooLarge,
    PermissionDenied,
    ScheduleNotFound,
    ServerStartError,
    ServerUnavailable,
    TaskCancelled,
    TaskExists,
    TaskFailed,
    TaskFinished,
    TaskNotFound,
    UnknownDependency,
)
from .identity import Identity, read_seed
from .ledger import Ledger
from .log import configure_logging
from .matching import Verdict
from .models import (
    AgentCard,
    ArtifactRef,
    Attempt,
    CapabilitySpec,
    LeaseRecord,
    RetryPolicy,
    Route,
    Schedule,
    Task,
    TaskRecord,
    TaskStatus,
    Ticket,
    TrailEvent,
)
from .reputation import Reputation, ReputationConfig
from .server import EmbeddedCluster, EmbeddedServer
from .trail import Scent, Trail, TrailConfig
from .verify import Authenticity, Verifier

__all__ = [
    "Agent",
    "AgentCard",
    "AntsError",
    "ArtifactNotFound",
    "ArtifactRef",
    "Artifacts",
    "Attempt",
    "Authenticity",
    "BoardConfig",
    "CapabilitySpec",
    "CardChange",
    "CorruptEntry",
    "Decider",
    "Decline",
    "DependencyCycle",
    "Directory",
    "EmbeddedCluster",
    "EmbeddedServer",
    "Handler",
    "Identity",
    "InvalidSchedule",
    "InvalidTask",
    "Lease",
    "LeaseLost",
    "LeaseRecord",
    "Ledger",
    "NonRetryable",
    "PayloadTooLarge",
    "PermissionDenied",
    "Reputation",
    "ReputationConfig",
    "RetryPolicy",
    "Route",
    "Scent",
    "Schedule",
    "ScheduleNotFound",
    "ServerStartError",
    "ServerUnavailable",
    "Taken",
    "Task",
    "TaskBoard",
    "TaskCancelled",
    "TaskContext",
    "TaskExists",
    "TaskFailed",
    "TaskFinished",
    "TaskNotFound",
    "TaskRecord",
    "TaskStatus",
    "Ticket",
    "Trail",
    "TrailConfig",
    "TrailEvent",
    "UnknownDependency",
    "Verdict",
    "Verifier",
    "__version__",
    "configure_logging",
    "connect",
    "read_seed",
]
