"""Agent identities: ed25519 key pairs in the NATS nkeys format, for signing trail events.

An agent announces its public key (``U...``) on its card and signs every event it lays; a verifier
rejects events whose signature does not match the announced key of the agent that laid them.

A signature covers the message exactly as it is stored, never a re-serialisation: the bytes of
``signing_input(subject, payload)``, i.e. the subject, a newline, then the payload bytes. It travels
in two headers, ``Ants-Signer`` (the public nkey) and ``Ants-Sig`` (base64url of the 64-byte
ed25519 signature, without padding), so any client that can publish with headers and sign with
ed25519 (nkeys.js, Go's nkeys, libsodium) lays events that verify, whatever its JSON looks like.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

import nacl.exceptions
import nacl.signing
import nkeys

from .errors import AntsError

SIGNER_HEADER = "Ants-Signer"
"""Header holding the public nkey (``U...``) of the key that signed the message."""
SIG_HEADER = "Ants-Sig"
"""Header holding the signature: base64url (RFC 4648 section 5, no padding) of the ed25519
signature of ``signing_input(subject, payload)``. Readers accept it padded as well."""


def signing_input(subject: str, payload: bytes) -> bytes:
    """The bytes a message signature covers: ``subject`` (UTF-8), one ``\\n``, ``payload`` as sent.

    A subject cannot contain whitespace, so the first newline splits the two unambiguously; the
    subject binds the signature to where the message was published (its kind, ref and author)."""
    return subject.encode() + b"\n" + payload


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """The value of header ``name`` in ``headers``, whatever the case of its name (some clients
    canonicalise header names; the two signature headers are already in canonical form)."""
    if not headers:
        return None
    if name in headers:
        return headers[name]
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


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
        """URL-safe base64 (padded) of the ed25519 signature of ``data``: the deprecated in-body
        ``sig`` of a trail event; ``sign_message`` for what is written now."""
        signature: bytes = self._keypair.sign(data)
        return base64.urlsafe_b64encode(signature).decode()

    def sign_message(self, subject: str, payload: bytes) -> dict[str, str]:
        """The headers that sign the message ``payload`` on ``subject``: ``Ants-Signer`` and
        ``Ants-Sig`` over ``signing_input(subject, payload)``."""
        signature: bytes = self._keypair.sign(signing_input(subject, payload))
        encoded = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        return {SIGNER_HEADER: self.public_key, SIG_HEADER: encoded}


CREDS_ENV = ("ANTS_NATS_CREDS", "ANTS_NATS_SEED_FILE")
"""Where every command and service finds its credentials file when none is given (in this order;
the second is the older name)."""


def creds_from_env() -> Path | None:
    """The credentials file ``$ANTS_NATS_CREDS`` (or ``$ANTS_NATS_SEED_FILE``) names, if any."""
    named = next((os.environ[name] for name in CREDS_ENV if os.environ.get(name)), None)
    return Path(named) if named else None


def read_seed(path: Path) -> str:
    """The nkeys user seed stored in ``path``: a seed file as ``ants-nats config`` writes it, or
    the seed section of a ``.creds`` file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise AntsError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    seed = next((line.strip() for line in text.splitlines() if line.strip().startswith("SU")), None)
    if seed is None:
        raise AntsError(f"{path} holds no user nkeys seed (SU...)")
    return seed


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """True when ``signature`` (base64url, padded or not) is ``public_key``'s (``U...``) ed25519
    signature of ``data``."""
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
        padded = signature + "=" * (-len(signature) % 4)
        # A character outside base64 is an error (the default would silently skip it).
        sig = base64.b64decode(padded.encode(), altchars=b"-_", validate=True)
        nacl.signing.VerifyKey(raw[1:33]).verify(data, sig)
    except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError):
        return False
    return True
