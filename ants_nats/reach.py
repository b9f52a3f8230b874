"""Whether a process reaches the board: said once when it is lost, with why, and once when found.

An agent at a site whose link to the hub is down (or beside a server without JetStream for a
moment) can neither pull, claim nor finish. Rather than a failed pull logged each second, it says
once that the board is out of reach and why, and once when it is back, with how long it was gone.
"""

from __future__ import annotations

import time

from nats.aio.client import Client

from ._connect import domain_of
from .log import get_logger

log = get_logger("agent")


def why_unreachable(nc: Client) -> str:
    """What a board that does not answer most likely means, for ``nc``'s connection."""
    if not nc.is_connected:
        return "disconnected from the NATS server (the client reconnects by itself)"
    domain = domain_of(nc)
    if domain:
        return (
            f"nothing answers for the board's JetStream domain {domain!r} through this server: "
            "its link to the hub is likely down (the site's server reconnects by itself)"
        )
    return "JetStream does not answer on this server (restarting, or electing a leader)"


class Reach:
    """One agent's view of whether the board answers."""

    def __init__(self, nc: Client, agent_id: str) -> None:
        self._nc = nc
        self._agent_id = agent_id
        self._lost_at: float | None = None

    @property
    def reachable(self) -> bool:
        """False from a failure until the next success."""
        return self._lost_at is None

    def lost(self, error: str) -> None:
        """The board did not answer (logged once per outage)."""
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning(
                "agent.board_unreachable",
                agent=self._agent_id,
                why=why_unreachable(self._nc),
                error=error,
                taking_work=False,
            )

    def found(self) -> None:
        """The board answered (logged once, after an outage)."""
        if self._lost_at is not None:
            gone = time.monotonic() - self._lost_at
            self._lost_at = None
            log.info("agent.board_reachable", agent=self._agent_id, unreachable_s=round(gone, 1))
