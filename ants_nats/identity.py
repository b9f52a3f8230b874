"""Agent identities: ed25519 key pairs in the NATS nkeys format, for signing trail events.

An agent announces its public key (``U...``) on its card and signs every event it lays; a verifier
rejects events whose signature does not match the announced key of the agent that laid them.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import nacl.exceptions
import nacl.signing
import nkeys

from .errors import AntsError


class Identity:
    """A signing key. ``Identity.generate()`` for a fresh one, ``from_seed`` to keep one."""

    def __init__(self, keypair: nkeys.KeyPair) -> None:
        self._keypair = keypair
        self.public_key: str = keypair.public_key.decode()

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity."""
        signing_key = nacl.signing.SigningKey.generate()
        return cls(nkeys.from_seed(nkeys.encode_seed(bytes(signing_key), nkeys.PREFIX_BYTE_USER)))

    @classmethod
    def from_seed(cls, seed: str) -> Identity:
        """The identity of an nkeys user seed (``SU...``)."""
        try:
            return cls(nkeys.from_seed(seed.encode()))
        except (nkeys.NkeysError, ValueError, binascii.Error) as exc:
            raise AntsError("invalid nkeys seed") from exc

    @property
    def seed(self) -> str:
        """The secret seed (``SU...``); keep it private."""
        seed: bytes = self._keypair.seed
        return seed.decode()

    def sign(self, data: bytes) -> str:
        """URL-safe base64 of the ed25519 signature of ``data``."""
        signature: bytes = self._keypair.sign(data)
        return base64.urlsafe_b64encode(signature).decode()


def read_seed(path: Path) -> str:
    """The nkeys seed stored in ``path`` (as written by ``ants-nats config``)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise AntsError(f"cannot read seed file {path}: {exc.strerror}") from exc
    if not text.startswith("SU"):
        raise AntsError(f"{path} does not hold a user nkeys seed (SU...)")
    return text


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``data``."""
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
        nacl.signing.VerifyKey(raw[1:33]).verify(data, base64.urlsafe_b64decode(signature))
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True
