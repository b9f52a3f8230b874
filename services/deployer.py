"""Deployer: when an ``artifact.written`` mark appears, publish the artifact into a directory and
lay an ``artifact.deployed`` mark. It knows nothing of who writes artifacts.

Mark data it expects: ``{"artifact": <ArtifactRef>}`` (an artifact in the Object Store, written
from any host, e.g. with ``TaskContext.put_artifact``), or ``{"path": "<file>"}`` for a file on
this host under ``--source-dir`` (without it, paths are refused: whoever can lay a mark could
otherwise have any file the deployer can read published). A mark it cannot act on gets an
``artifact.deploy_failed`` mark with the reason (nothing is dropped silently).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path, PurePosixPath

import pydantic

from ants_nats import (
    ArtifactNotFound,
    ArtifactRef,
    Artifacts,
    CorruptEntry,
    Trail,
    TrailEvent,
    connect,
    jetstream,
)
from ants_nats.log import get_logger

from . import _common

log = get_logger("deployer")

WATCHED = "ants.trail.mark.artifact.written.>"


def _publish(source: Path | bytes, publish_dir: Path, name: str) -> Path:
    """Write ``source`` (a file to copy, or the bytes) into ``publish_dir`` as ``name``, atomically
    (write, then rename)."""
    if isinstance(source, Path) and not source.is_file():
        raise FileNotFoundError(f"no readable file at {str(source)!r}")
    if Path(name).name != name or name.startswith("."):  # never a path out of publish_dir
        raise ValueError(f"not a file name: {name!r}")
    publish_dir.mkdir(parents=True, exist_ok=True)
    target = publish_dir / name
    partial = target.with_suffix(target.suffix + ".partial")
    if isinstance(source, Path):
        shutil.copyfile(source, partial)
    else:
        partial.write_bytes(source)
    partial.replace(target)  # a reader of publish_dir never sees a half-written file
    return target


def _source(given: str, source_dir: Path | None) -> Path:
    """The file a mark's ``path`` names (a relative one from ``source_dir``), if it lies under
    ``source_dir``, symbolic links followed."""
    if source_dir is None:
        raise ValueError("this deployer takes no paths (start it with --source-dir to allow files under one)")
    try:
        source = (source_dir / given).resolve()
    except RuntimeError as exc:  # a loop of links (Python 3.11 and 3.12 raise this, not OSError)
        raise ValueError(f"{given!r}: {exc}") from exc
    if not source.is_relative_to(source_dir.resolve()):
        raise ValueError(f"{given!r} is not under the source directory {str(source_dir)!r}")
    return source


async def deploy(
    trail: Trail, artifacts: Artifacts, event: TrailEvent, publish_dir: Path, source_dir: Path | None = None
) -> None:
    """Deploy the artifact named by one ``artifact.written`` mark (a file it names only from
    under ``source_dir``)."""
    data = event.data if isinstance(event.data, dict) else {}
    try:
        if "artifact" in data:
            try:
                ref = ArtifactRef.model_validate(data["artifact"])
            except pydantic.ValidationError as exc:
                raise ValueError(f"the mark's 'artifact' is not an artifact reference: {exc}") from exc
            content = await artifacts.get(ref)
            name = f"{event.ref}{PurePosixPath(ref.name).suffix}"
            target = await asyncio.to_thread(_publish, content, publish_dir, name)
        elif isinstance(data.get("path"), str):
            source = _source(str(data["path"]), source_dir)
            target = await asyncio.to_thread(_publish, source, publish_dir, f"{event.ref}{source.suffix}")
        else:
            raise ValueError("the mark's data has neither 'artifact' nor 'path'")
    except (OSError, ValueError, ArtifactNotFound, CorruptEntry) as exc:
        log.error("artifact.deploy_failed", key=event.ref, reason=str(exc))
        await trail.mark("artifact.deploy_failed", key=event.ref, data={"reason": str(exc)}, agent="deployer")
        return
    log.info("artifact.deployed", key=event.ref, path=str(target))
    await trail.mark("artifact.deployed", key=event.ref, data={"path": str(target)}, agent="deployer")


async def serve(
    url: str,
    publish_dir: Path,
    *,
    source_dir: Path | None = None,
    durable: str = "deployer",
    seed: str | None = None,
    js_domain: str | None = None,
) -> None:
    """React to every ``artifact.written`` mark, forever (replicas share ``durable``)."""
    async with connect(url, name="deployer", seed=seed, js_domain=js_domain) as nc:
        trail = await Trail.open(nc)
        artifacts = Artifacts(jetstream(nc))
        async for event in trail.follow(WATCHED, durable=durable):
            await deploy(trail, artifacts, event, publish_dir, source_dir)


async def _main(args: argparse.Namespace) -> None:
    await serve(
        args.server,
        args.publish_dir,
        source_dir=args.source_dir,
        seed=_common.seed(args),
        js_domain=args.js_domain,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ants-deployer``."""
    p = _common.parser("ants-deployer", __doc__ or "")
    p.add_argument("--publish-dir", type=Path, required=True, help="where deployed artifacts go")
    p.add_argument(
        "--source-dir",
        type=Path,
        help="take marks naming a local file ({'path': ...}) for files under this directory only "
        "(default: none, only artifacts from the Object Store)",
    )
    return _common.run(p.parse_args(argv), _main)


if __name__ == "__main__":
    sys.exit(main())
