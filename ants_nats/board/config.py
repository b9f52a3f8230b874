"""Settings every agent of one board should share."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AntsError
from ..reputation import ReputationConfig


@dataclass(frozen=True)
class BoardConfig:
    """Settings every agent of one board should share."""

    lease_ttl: float = 30.0
    """Seconds a claim lives without a heartbeat before the server expires it."""
    replicas: int = 1
    """Replicas of the buckets and the work stream (3 on a 3-node cluster)."""
    inline_bytes: int = 64 * 1024
    """Payloads and results larger than this (as JSON) are kept in the Object Store bucket
    ``ants_artifacts``; the record holds a reference, and readers resolve it."""
    max_payload_bytes: int = 64 * 1024 * 1024
    """Largest accepted task payload, and task result, as JSON."""
    max_artifact_bytes: int = 1024 * 1024 * 1024
    """Largest file or value a handler may store with ``TaskContext.put_artifact``."""
    artifact_ttl: float | None = 14 * 24 * 3600.0
    """Seconds an artifact is kept after it is written (the server removes it then): a finished
    record's ``finished_ttl`` plus a week of work. None keeps artifacts forever."""
    task_history: int = 5
    """Revisions kept per task key (inspect them with ``nats kv history``)."""
    card_ttl: float = 10.0
    """Seconds an agent card lives without a fresh announcement (agents announce every TTL/3)."""
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    """How reputation gates claims (quarantine, probation, preference)."""
    claim_after: float = 0.25
    """Seconds a handler runs before the agent writes its claim to the record. A task finished
    sooner goes from ``pending`` to its outcome in one write; 0 writes every claim at once."""
    finished_ttl: float | None = 7 * 24 * 3600.0
    """Seconds a finished task's record is kept (its final revision only) before the server
    removes it; None keeps records forever. A record stays while a dependent of it is unfinished."""

    signed: bool = False
    """Make a signed board (when this connection creates it): every revision of a task record is
    signed by its writer and checked by every reader (``board.seal``), so no credentialed agent
    can forge another's task. A board is signed or not from its creation on (its ``ants_tasks``
    stream's metadata ``ants_signed``); every agent of a signed board needs an identity."""

    def __post_init__(self) -> None:
        # The server rejects per-message TTLs under one second.
        for name in ("lease_ttl", "card_ttl", "finished_ttl", "artifact_ttl"):
            value = getattr(self, name)
            if value is not None and value < 1.0:
                raise AntsError(f"BoardConfig.{name} must be at least 1 second")
        if not 0.0 <= self.claim_after < self.lease_ttl / 3:
            raise AntsError("BoardConfig.claim_after must be at least 0 and less than lease_ttl / 3")
        if not 0 < self.inline_bytes <= self.max_payload_bytes:
            raise AntsError("BoardConfig.inline_bytes must be positive and at most max_payload_bytes")
        if self.replicas not in (1, 3, 5):
            raise AntsError("BoardConfig.replicas must be 1, 3 or 5")
