"""ants-nats: leaderless work division for autonomous agents on NATS JetStream."""

from ._connect import connect
from ._version import __version__
from .agent import Agent, Decider
from .board import BoardConfig, Lease, Taken, TaskBoard
from .cards import CardChange, Directory
from .context import Decline, Handler, TaskContext
from .errors import (
    AntsError,
    CorruptEntry,
    DependencyCycle,
    InvalidTask,
    LeaseLost,
    PayloadTooLarge,
    ServerStartError,
    ServerUnavailable,
    TaskExists,
    TaskNotFound,
    UnknownDependency,
)
from .log import configure_logging
from .matching import Verdict
from .models import (
    AgentCard,
    Attempt,
    CapabilitySpec,
    LeaseRecord,
    Route,
    Task,
    TaskRecord,
    TaskStatus,
    Ticket,
    TrailEvent,
)
from .server import EmbeddedCluster, EmbeddedServer
from .trail import Scent, Trail, TrailConfig

__all__ = [
    "Agent",
    "AgentCard",
    "AntsError",
    "Attempt",
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
    "InvalidTask",
    "Lease",
    "LeaseLost",
    "LeaseRecord",
    "PayloadTooLarge",
    "Route",
    "Scent",
    "ServerStartError",
    "ServerUnavailable",
    "Taken",
    "Task",
    "TaskBoard",
    "TaskContext",
    "TaskExists",
    "TaskNotFound",
    "TaskRecord",
    "TaskStatus",
    "Ticket",
    "Trail",
    "TrailConfig",
    "TrailEvent",
    "UnknownDependency",
    "Verdict",
    "__version__",
    "configure_logging",
    "connect",
]
