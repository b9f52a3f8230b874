"""Events on the trail, and the per-agent ledger projected from them."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, JsonValue

from ._wire import Wire, utcnow
from .spending import Usage


class TrailEvent(Wire):
    """One event on the trail (stream ``ANTS_TRAIL``, subject ``ants.trail.<kind>.<ref>.<by or _>``).

    ``kind`` is ``task.<what>``, ``agent.<what>`` or ``mark.<name>``; ``ref`` the task id, agent id
    or mark key. ``seq`` is the stream sequence, filled in when the event is read (never written).
    A signed event's signature is in its message's headers (``Ants-Signer``, ``Ants-Sig``) and
    covers the message as stored; an event read from the trail keeps that message (``stored``).
    """

    kind: str
    ref: str
    at: datetime = Field(default_factory=utcnow)
    agent: str | None = Field(default=None, description="Who laid it.")
    token: int | None = Field(default=None, description="Fencing token, for lease events.")
    intensity: float = Field(default=1.0, ge=0, le=1_000_000)
    data: JsonValue = None
    by: str | None = Field(default=None, description="The agent that laid it (signed it), if any.")
    v: int | None = Field(default=None, description="Protocol version of its writer (null: 1).")
    signer: str | None = Field(
        default=None, description="Deprecated (now the Ants-Signer header): public nkey of the signer."
    )
    sig: str | None = Field(
        default=None, description="Deprecated (now the Ants-Sig header): signature of signed_bytes()."
    )
    seq: int | None = None
    # Not a field: the message the event was read from, whose bytes a header signature covers
    # (another client's JSON is not ours, so the event cannot be serialised back to them).
    _stored: tuple[str, bytes, dict[str, str]] | None = None

    @property
    def stored(self) -> tuple[str, bytes, dict[str, str]] | None:
        """The message this event was read from (subject, payload, headers), None if it was not."""
        return self._stored

    def stored_as(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> TrailEvent:
        """This event, noting the message it was read from (what a verifier checks)."""
        event = self.model_copy()
        event._stored = (subject, payload, dict(headers or {}))
        return event

    def signed_bytes(self) -> bytes:
        """The bytes a deprecated in-body ``sig`` covers: pydantic's JSON of the event without
        ``sig`` and ``seq`` (nor ``v``, which came later). Such events are still verified for one
        release; none are written."""
        return self.model_dump_json(exclude={"sig", "seq", "v"}).encode()

    def strength(self, now: datetime, half_life: float) -> float:
        """Intensity left at ``now``: it halves every ``half_life`` seconds (evaporation)."""
        age = max((now - self.at).total_seconds(), 0.0)
        return float(self.intensity * 0.5 ** (age / half_life))


ANY_CAPABILITY = "any"
"""The capability name under which tasks that require nothing are accounted."""


class Counts(Wire):
    """How often something happened."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    released: int = 0
    declined: int = 0
    asked: int = 0
    bad_result: int = 0
    forged: int = 0

    def plus(self, what: str) -> Counts:
        """These counts with one more ``what``."""
        return self.model_copy(update={what: getattr(self, what) + 1})


class Score(Wire):
    """A Beta reputation with exponential forgetting (Jøsang & Ismail, 2002).

    ``good`` and ``bad`` are evidence weights decayed to time ``at``; evidence halves every
    ``half_life`` seconds. The score is the expected value of Beta(1 + good, 1 + bad): 0.5 with no
    evidence, toward 1 with successes, toward 0 with failures.
    """

    good: float = 0.0
    bad: float = 0.0
    at: datetime | None = None

    def decayed(self, now: datetime, half_life: float) -> Score:
        """The same evidence, as it stands at ``now``."""
        if self.at is None:
            return self.model_copy(update={"at": now})
        factor = 0.5 ** (max((now - self.at).total_seconds(), 0.0) / half_life)
        return Score(good=self.good * factor, bad=self.bad * factor, at=max(now, self.at))

    def add(self, good: float, bad: float, at: datetime, half_life: float) -> Score:
        """This score with more evidence observed at ``at``."""
        current = self.decayed(at, half_life)
        return current.model_copy(update={"good": current.good + good, "bad": current.bad + bad})

    def value(self, now: datetime, half_life: float) -> float:
        """The reputation at ``now``, in (0, 1)."""
        current = self.decayed(now, half_life)
        return (1.0 + current.good) / (2.0 + current.good + current.bad)


class AgentLedger(Wire):
    """The value of key ``<agent id>`` in ``ants_ledger``: counts and reputation per capability."""

    agent: str
    totals: Counts = Counts()
    by_capability: dict[str, Counts] = Field(default_factory=dict)
    scores: dict[str, Score] = Field(default_factory=dict)
    usage: dict[str, Usage] = Field(default_factory=dict, description="What its work spent, per capability.")
    last_seq: int = 0
    updated_at: str = ""
