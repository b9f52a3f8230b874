"""What work spends and what it may spend: usage, shared rate limits and their windows, budgets."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from ._wire import Capability, TaskId, Wire, utcnow


class Usage(Wire):
    """What work spent: tokens in and out, and money (in whatever unit the caller uses)."""

    tokens_in: int = Field(default=0, ge=0)
    tokens_out: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @property
    def tokens(self) -> int:
        """Tokens in and out together (what a token limit or budget counts)."""
        return self.tokens_in + self.tokens_out

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            cost=self.cost + other.cost,
        )

    def __bool__(self) -> bool:
        return bool(self.tokens_in or self.tokens_out or self.cost)


class Limit(Wire):
    """A rate limit shared by every agent serving a capability: key ``<capability>`` in
    ``ants_limits``. At most ``requests`` handler runs and ``tokens`` reported tokens start in
    any ``per`` seconds, swarm-wide (unset: no limit of that kind)."""

    capability: Capability
    requests: int | None = Field(default=None, ge=0, le=10_000_000)
    tokens: int | None = Field(default=None, ge=0)
    per: float = Field(
        default=60.0, gt=0, le=86_400, allow_inf_nan=False, description="The interval, in seconds."
    )
    set_by: str | None = Field(default=None, max_length=128)
    set_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="after")
    def _limits_something(self) -> Limit:
        if self.requests is None and self.tokens is None:
            raise ValueError("a limit needs requests and/or tokens per interval")
        return self


class RateSlot(Wire):
    """What was taken of a limit in one slot of time (a twentieth of its interval)."""

    n: int = Field(description="The slot: floor(unix time / slot length).")
    requests: int = Field(default=0, ge=0)
    tokens: int = Field(default=0, ge=0)


class RateWindow(Wire):
    """What agents took of a capability's limit lately: key ``<capability>`` in ``ants_rates``,
    changed by compare-and-set only. ``held_until``: a provider said "too many" (``RateLimited``);
    nobody starts work of the capability before then."""

    slots: tuple[RateSlot, ...] = ()
    held_until: datetime | None = None


class Budget(Wire):
    """What a submission may spend: key ``<id>`` in ``ants_budgets``. Its tasks carry the id
    (``Task.budget``); once ``spent`` reaches ``tokens`` or ``cost``, they fail unclaimed."""

    id: TaskId
    tokens: int | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    spent: Usage = Field(default_factory=Usage)
    charged: tuple[str, ...] = Field(
        default=(), description="The latest attempts charged (task.token.outcome): each is charged once."
    )
    created_at: datetime = Field(default_factory=utcnow)
    owner_key: str | None = Field(
        default=None, description="On a signed board: the public key of the submitter that opened it."
    )
    sig: str | None = Field(
        default=None, description="On a signed board: the owner's signature of its limits (``limits_bytes``)."
    )

    def limits_bytes(self) -> bytes:
        """What the owner signs on a signed board: the budget's id, limits and owner, as JSON."""
        return self.model_dump_json(include={"id", "tokens", "cost", "owner_key"}).encode()

    @model_validator(mode="after")
    def _limits_something(self) -> Budget:
        if self.tokens is None and self.cost is None:
            raise ValueError("a budget needs tokens and/or cost")
        return self

    @property
    def exhausted_because(self) -> str | None:
        """Why nothing more may be spent (None while something is left)."""
        if self.tokens is not None and self.spent.tokens >= self.tokens:
            return f"budget {self.id!r} is spent: {self.spent.tokens} of {self.tokens} tokens"
        if self.cost is not None and self.spent.cost >= self.cost:
            return f"budget {self.id!r} is spent: cost {self.spent.cost:g} of {self.cost:g}"
        return None

    @property
    def exhausted(self) -> str | None:
        """``exhausted_because``'s name in 0.1.0 (a reason, not a yes or no), kept so that code
        written against it still runs."""
        return self.exhausted_because
