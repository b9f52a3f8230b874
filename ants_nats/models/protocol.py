"""The protocol's version and features: what a writer says it speaks, and what a task may need.

Every record and event names the protocol version of the process that wrote it last (``v``).
Compatible changes (a new optional field, a new event kind) need no version step: readers keep
fields they do not know. A change an older agent would get wrong if it took the task (a field
whose meaning it must act on) names a feature: the task lists it in ``Task.needs``, and an agent
that lacks it steps aside with a free decline, so only agents that understand it take it.
"""

from __future__ import annotations

PROTOCOL_VERSION = 2
"""1: strict readers (releases up to 0.2). 2: tolerant readers, features, signed boards."""

FEATURES: frozenset[str] = frozenset({"ask", "budget", "decline", "signed", "usage"})
"""Features this version's agents understand (``Task.needs`` may name them and future ones)."""


def lacking(needs: tuple[str, ...], features: frozenset[str]) -> tuple[str, ...]:
    """The features of ``needs`` missing from ``features``, in order."""
    return tuple(feature for feature in needs if feature not in features)
