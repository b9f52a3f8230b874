"""What an agent offers: its card and the capabilities on it."""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import Field, JsonValue

from ._wire import AgentId, Capability, Wire, utcnow
from .task import Task


class CapabilitySpec(Wire):
    """A capability an agent announces: a name, optionally a version and numeric limits, and what
    a planner (often an LLM) needs to choose it: a description, the JSON Schemas of the payload it
    takes and the result it gives, and example requests."""

    name: Capability
    version: str | None = Field(default=None, max_length=64)
    limits: dict[str, float] = Field(default_factory=dict, description="e.g. {'max_tokens': 4000}")
    description: str | None = Field(default=None, max_length=2000)
    input_schema: dict[str, JsonValue] | None = Field(default=None, description="JSON Schema of payloads.")
    output_schema: dict[str, JsonValue] | None = Field(default=None, description="JSON Schema of results.")
    examples: tuple[str, ...] = Field(default=(), max_length=20, description="Example requests, in words.")


class AgentCard(Wire):
    """What an agent *can* do and how busy it is: key ``<agent id>`` in ``ants_agents``."""

    id: AgentId
    name: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=2000, description="What it is for, in words.")
    capabilities: tuple[CapabilitySpec, ...] = ()
    kinds: tuple[Capability, ...] | None = Field(
        default=None,
        max_length=1000,
        description="Task kinds it has handlers for; null: any kind (a catch-all handler, or a card "
        "that does not say).",
    )
    load: int = Field(ge=0)
    capacity: int = Field(ge=1)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    software: str = Field(description="ants-nats version the agent runs.")
    public_key: str | None = Field(default=None, description="nkey (U...) its trail events are signed with.")

    @property
    def capability_names(self) -> frozenset[str]:
        """Names of the announced capabilities."""
        return frozenset(c.name for c in self.capabilities)

    @property
    def spare(self) -> int:
        """Tasks it could still take."""
        return max(self.capacity - self.load, 0)

    def handles(self, kind: str) -> bool:
        """Whether it has a handler for tasks of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def can_take(self, task: Task) -> bool:
        """Whether it announces every capability ``task`` requires and handles its kind."""
        return set(task.requires) <= self.capability_names and self.handles(task.kind)

    @property
    def offer(self) -> str:
        """A digest of what it offers (capabilities, kinds, capacity; not its load): a decline
        stands while the decliner's offer is unchanged."""
        offered = self.model_dump_json(include={"capabilities", "kinds", "capacity"})
        return hashlib.sha256(offered.encode()).hexdigest()[:16]
