"""ants-nats: leaderless work division for autonomous agents on NATS JetStream."""

from ._connect import connect
from ._version import __version__
from .agent import CATCH_ALL, Agent, Decider
from .agent_protocol import AgentProtocolHandler, via_agent_protocol
from .artifacts import Artifacts
from .board import BoardConfig, Lease, Taken, TaskBoard
from .cards import CardChange, Directory
from .context import Handler, TaskContext
from .errors import (
    AgentProtocolError,
    AntsError,
    ArtifactNotFound,
    BudgetExhausted,
    CorruptEntry,
    DependencyCycle,
    InvalidSchedule,
    InvalidTask,
    LeaseLost,
    LimitNotFound,
    NotWaiting,
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
    Budget,
    CapabilitySpec,
    LeaseRecord,
    Limit,
    Question,
    RetryPolicy,
    Route,
    Schedule,
    Task,
    TaskRecord,
    TaskStatus,
    Ticket,
    TrailEvent,
    Usage,
)
from .reputation import Reputation, ReputationConfig
from .server import EmbeddedCluster, EmbeddedServer
from .signals import Decline, NonRetryable, RateLimited
from .throttle import Throttle
from .trail import Scent, Trail, TrailConfig
from .verify import Authenticity, Verifier

__all__ = [
    "CATCH_ALL",
    "Agent",
    "AgentCard",
    "AgentProtocolError",
    "AgentProtocolHandler",
    "AntsError",
    "ArtifactNotFound",
    "ArtifactRef",
    "Artifacts",
    "Attempt",
    "Authenticity",
    "BoardConfig",
    "Budget",
    "BudgetExhausted",
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
    "Limit",
    "LimitNotFound",
    "NonRetryable",
    "NotWaiting",
    "PayloadTooLarge",
    "PermissionDenied",
    "Question",
    "RateLimited",
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
    "Throttle",
    "Ticket",
    "Trail",
    "TrailConfig",
    "TrailEvent",
    "UnknownDependency",
    "Usage",
    "Verdict",
    "Verifier",
    "__version__",
    "configure_logging",
    "connect",
    "read_seed",
    "via_agent_protocol",
]
