"""Artifacts: payloads, results and files too big for a message, in a NATS Object Store bucket.

The bucket ``ants_artifacts`` is a plain Object Store (``nats object ls ants_artifacts``): any NATS
client reads an artifact by the name its ``ArtifactRef`` holds, and the store checks its SHA-256
digest on the way out. A board keeps payloads and results above ``BoardConfig.inline_bytes`` here,
so that the task record holds only the reference; the bucket's TTL (``BoardConfig.artifact_ttl``)
removes artifacts on the server, a while after their task's record is gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from datetime import datetime
from pathlib import Path

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore
from pydantic import JsonValue

from ._store import patiently, translate_errors
from .errors import ArtifactNotFound, CorruptEntry, PayloadTooLarge
from .log import get_logger
from .models import ArtifactRef, utcnow
from .names import ARTIFACTS_BUCKET

log = get_logger("artifacts")


class Artifacts:
    """The artifact store of one board (created on first use)."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        replicas: int = 1,
        ttl: float | None = None,
        max_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        """Reading needs only ``js``; the rest configures the bucket if a write has to create it."""
        self._js = js
        self._replicas = replicas
        self._ttl = ttl
        self.max_bytes = max_bytes
        """Largest artifact accepted."""
        self._store: ObjectStore | None = None

    async def _bucket(self, *, create: bool = True) -> ObjectStore:
        if self._store is None:
            js = self._js

            async def open_or_create() -> ObjectStore:
                try:
                    return await js.object_store(ARTIFACTS_BUCKET)
                except nats.js.errors.BucketNotFoundError as exc:
                    if not create:
                        raise ArtifactNotFound(f"no bucket {ARTIFACTS_BUCKET}: nothing was stored") from exc
                    config = ObjectStoreConfig(
                        bucket=ARTIFACTS_BUCKET,
                        description="ants-nats payloads, results and files too big to be inline",
                        ttl=self._ttl,
                        storage=StorageType.FILE,
                        replicas=self._replicas,
                    )
                    return await js.create_object_store(ARTIFACTS_BUCKET, config=config)

            self._store = await patiently(js, f"open bucket {ARTIFACTS_BUCKET}", open_or_create)
        return self._store

    async def put(self, name: str, data: bytes | Path) -> ArtifactRef:
        """Store ``data`` (bytes, or a file streamed from disk) as artifact ``name``, replacing one
        of that name; ``PayloadTooLarge`` above ``max_bytes``."""
        size = (await asyncio.to_thread(data.stat)).st_size if isinstance(data, Path) else len(data)
        if size > self.max_bytes:
            raise PayloadTooLarge(f"artifact {name!r}", size, self.max_bytes)
        store = await self._bucket()
        async with translate_errors(f"write artifact {name}"):
            if isinstance(data, Path):
                with data.open("rb") as file:
                    info = await store.put(name, file)
            else:
                # The same bytes again (a repeated submission or completion) are left as they are
                # while young: a put replaces the chunks, which a reader may be reading at that
                # moment. An old copy is put again, so that it lives a full ``ttl`` from now.
                ref = ref_of(name, data)
                with contextlib.suppress(nats.js.errors.ObjectNotFoundError):
                    kept = await store.get_info(name)
                    if kept.digest == ref.digest and kept.size == ref.size and self._young(kept.mtime):
                        return ref
                info = await store.put(name, data)
        log.debug("artifact.written", name=name, size=info.size)
        return ArtifactRef(name=name, size=int(info.size or 0), digest=str(info.digest))

    def _young(self, mtime: str | None) -> bool:
        """Whether an object put at ``mtime`` has more than half its time to live left."""
        if self._ttl is None:
            return True
        try:
            put_at = datetime.fromisoformat(mtime or "")
        except ValueError:
            return False
        return (utcnow() - put_at).total_seconds() < self._ttl / 2

    async def get(self, ref: ArtifactRef) -> bytes:
        """The bytes of ``ref`` (digest checked): ``ArtifactNotFound`` when it is gone (e.g. expired),
        ``CorruptEntry`` when the stored object is not the one referred to."""
        store = await self._bucket(create=False)
        async with translate_errors(f"read artifact {ref.name}"):
            try:
                result = await store.get(ref.name)
            except nats.js.errors.ObjectNotFoundError as exc:
                missing = f"artifact {ref.name!r} is not in {ARTIFACTS_BUCKET} (expired?)"
                raise ArtifactNotFound(missing) from exc
            except nats.js.errors.DigestMismatchError as exc:
                raise CorruptEntry(f"artifact {ref.name!r} does not match its digest") from exc
        if result.info.digest != ref.digest:
            raise CorruptEntry(f"artifact {ref.name!r} was replaced since it was referred to")
        return bytes(result.data or b"")

    async def get_json(self, ref: ArtifactRef) -> JsonValue:
        """The JSON value stored as ``ref``."""
        data = await self.get(ref)
        try:
            value: JsonValue = json.loads(data)
        except ValueError as exc:
            raise CorruptEntry(f"artifact {ref.name!r} is not JSON") from exc
        return value


def ref_of(name: str, data: bytes) -> ArtifactRef:
    """The reference ``data`` stored as artifact ``name`` will have (the Object Store's digest),
    known before anything is stored."""
    digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    return ArtifactRef(name=name, size=len(data), digest=digest)
