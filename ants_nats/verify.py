"""Checking who laid a trail event: the signature must match the announced key of its agent.

An event is signed over its message as stored (headers ``Ants-Signer`` and ``Ants-Sig``, see
``identity``), so events laid by any client verify, whatever its JSON serialisation. Events whose
signature is in their body (``signer`` and ``sig`` over ``TrailEvent.signed_bytes()``), as this
library wrote them before, are still verified for one release.
"""

from __future__ import annotations

import time
from typing import Literal

import pydantic

from .cards import Directory
from .identity import SIG_HEADER, SIGNER_HEADER, header, signing_input, verify
from .log import get_logger
from .models import TrailEvent
from .names import trail_subject

log = get_logger("verify")

Authenticity = Literal["verified", "unsigned", "unknown", "forged"]
"""``verified``: signed by the announced key of the agent in ``by``. ``unsigned``: claims no
author (a system event). ``unknown``: the author has no live card to check against. ``forged``:
claims an author but the signature is missing, does not match its key, or the event was altered."""


def _as_stored(event: TrailEvent, subject: str, payload: bytes) -> bool:
    """Whether ``event`` says what the message it was read from says: on its own subject, with the
    same fields (its ``seq`` aside). A copy of a read event with a field changed keeps the message,
    and must not pass for it."""
    if subject != trail_subject(event.kind, event.ref, event.by):
        return False
    try:
        stored = TrailEvent.model_validate_json(payload, context={"wire": True})
    except pydantic.ValidationError:
        return False
    # Only what the message holds: a field it leaves out is filled in afresh on every read (the
    # time, for one), while a field changed on a copy is marked set there and shows.
    return stored.model_dump(exclude={"seq"}, exclude_unset=True) == event.model_dump(
        exclude={"seq"}, exclude_unset=True
    )


class Verifier:
    """Checks events against the agents' announced public keys (``AgentCard.public_key``)."""

    def __init__(self, directory: Directory, *, key_cache_s: float = 5.0) -> None:
        """``key_cache_s``: how long an author's key, once read from its card, verifies further
        events without reading the card again (a signer other than the remembered key always
        reads the card afresh: a restarted agent's new key is never taken for a forgery)."""
        self._directory = directory
        self._key_cache_s = key_cache_s
        self._keys: dict[str, tuple[float, str]] = {}

    async def check(self, event: TrailEvent) -> Authenticity:
        """How far ``event`` can be trusted to come from the agent it names in ``by``.

        An event read from the trail is checked against its message's headers: ``Ants-Sig`` must be
        the ``by`` agent's announced key's signature of the message's subject and payload, and
        ``Ants-Signer`` that key. A message with neither header falls back to the deprecated
        in-body ``signer``/``sig``. When both are there the headers rule, and a body ``signer``
        other than ``Ants-Signer`` makes the event forged (its author said two things)."""
        stored = event.stored
        signer = header(stored[2], SIGNER_HEADER) if stored else None
        sig = header(stored[2], SIG_HEADER) if stored else None
        if stored is None or (signer is None and sig is None):
            return await self._check_body(event)
        subject, payload, _ = stored
        if event.by is None or signer is None or sig is None:
            return self._forged(event, "incomplete")  # a signature for nobody, or half of one
        if event.signer is not None and event.signer != signer:
            return self._forged(event, "signers_disagree")
        if not _as_stored(event, subject, payload):
            return self._forged(event, "altered")
        if self._remembered(event.by) != signer:
            card = await self._directory.card(event.by)
            if card is None or card.public_key is None:
                return "unknown"
            if card.public_key != signer:
                return self._forged(event, "not_the_authors_key")
            self._keys[event.by] = (time.monotonic() + self._key_cache_s, signer)
        if not verify(signer, signing_input(subject, payload), sig):
            return self._forged(event, "bad_signature")
        return "verified"

    def _remembered(self, agent: str) -> str | None:
        """``agent``'s key as its card said less than ``key_cache_s`` ago, if so."""
        until, key = self._keys.get(agent, (0.0, ""))
        return key if time.monotonic() < until else None

    async def _check_body(self, event: TrailEvent) -> Authenticity:
        """The deprecated in-body signature: ``sig`` over ``signed_bytes()`` (one more release)."""
        if event.by is None:
            return "forged" if event.sig else "unsigned"
        if event.sig is None or event.signer is None:
            return self._forged(event, "unsigned")
        card = await self._directory.card(event.by)
        if card is None or card.public_key is None:
            return "unknown"
        if card.public_key != event.signer or not verify(event.signer, event.signed_bytes(), event.sig):
            return self._forged(event, "bad_body_signature")
        return "verified"

    @staticmethod
    def _forged(event: TrailEvent, why: str) -> Authenticity:
        log.debug("verify.forged", kind=event.kind, ref=event.ref, by=event.by, seq=event.seq, why=why)
        return "forged"
