"""Checking who laid a trail event: the signature must match the announced key of its agent."""

from __future__ import annotations

from typing import Literal

from .cards import Directory
from .identity import verify
from .models import TrailEvent

Authenticity = Literal["verified", "unsigned", "unknown", "forged"]
"""``verified``: signed by the announced key of the agent in ``by``. ``unsigned``: claims no
author (a system event). ``unknown``: the author has no live card to check against. ``forged``:
claims an author but the signature is missing, does not match its key, or the event was altered."""


class Verifier:
    """Checks events against the agents' announced public keys (``AgentCard.public_key``)."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    async def check(self, event: TrailEvent) -> Authenticity:
        """How far ``event`` can be trusted to come from the agent it names in ``by``."""
        if event.by is None:
            return "forged" if event.sig else "unsigned"
        if event.sig is None or event.signer is None:
            return "forged"
        card = await self._directory.card(event.by)
        if card is None or card.public_key is None:
            return "unknown"
        if card.public_key != event.signer or not verify(event.signer, event.signed_bytes(), event.sig):
            return "forged"
        return "verified"
