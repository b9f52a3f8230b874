"""What every wire model shares: the id types, the base model, UTC time, and writing and reading
JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from ..log import get_logger
from ..names import CAPABILITY_PATTERN, ID_PATTERN, MAX_SCHEDULE_NAME_LENGTH

log = get_logger("wire")

TaskId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
AgentId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Capability = Annotated[str, StringConstraints(pattern=CAPABILITY_PATTERN)]
ScheduleName = Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=MAX_SCHEDULE_NAME_LENGTH)]


def utcnow() -> datetime:
    """Current time, timezone-aware UTC (every timestamp on the wire is UTC)."""
    return datetime.now(UTC)


class Wire(BaseModel):
    """Every wire model: values are frozen; fields it does not know are refused in what a caller
    builds, and kept in what it reads off the wire (``parse_or_none``: a value a newer version
    wrote), so a rewrite of that value carries them on unchanged."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _known_fields_unless_read(self, info: ValidationInfo) -> Self:
        if self.model_extra and not (info.context or {}).get("wire"):
            unknown = ", ".join(sorted(self.model_extra))
            raise ValueError(f"unknown field(s) {unknown} (of {type(self).__name__})")
        return self


TRACEPARENT_PATTERN = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""A W3C ``traceparent`` (version, trace id, parent span id, flags)."""


def sorted_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    # One canonical JSON form per set, so equal tasks serialize identically.
    return tuple(sorted(set(values)))


_M = TypeVar("_M", bound=BaseModel)


def wire_bytes(model: BaseModel, *, exclude: set[str] | None = None) -> bytes:
    """``model`` as the JSON ants-nats writes: fields at their default value are left out (readers
    fill them in), which keeps the messages of the hot path small."""
    return model.model_dump_json(exclude_defaults=True, exclude=exclude).encode()


def problems(exc: ValidationError, whole: str) -> str:
    """Every problem of a failed validation, each as ``field: message`` (``whole``: the name of
    a problem of no one field)."""
    return "; ".join(
        f"{'.'.join(map(str, err['loc'])) or whole}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def parse_or_none(model: type[_M], data: bytes, *, where: str) -> _M | None:
    """``data`` as a ``model``, or None (logged with ``where``) when it does not validate.

    Shared state can hold garbage (a buggy or hostile writer); readers skip it instead of crashing.
    """
    try:
        return model.model_validate_json(data, context={"wire": True})
    except ValidationError:
        log.warning("wire.invalid", model=model.__name__, where=where)
        return None
