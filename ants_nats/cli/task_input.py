"""A task as the command line describes it: the task flags, a JSON or YAML document, a start time.

Shared by ``submit`` and ``schedule add``. A document that cannot be read is an ``InvalidTask`` (or
its template an ``InvalidSchedule``); flags that cannot be read are a ``UsageError``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidTask, UsageError
from ..models import utcnow


def task_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that describe a task (read by ``task_from_flags``)."""
    parser.add_argument("--kind")
    parser.add_argument("--require", action="append", default=[], help="required capability (repeatable)")
    parser.add_argument("--payload", default="null", help="payload as JSON")
    parser.add_argument("--priority", type=int, default=0, help="above 0: the route's express lane")
    parser.add_argument(
        "--fail-unroutable",
        action="store_true",
        help="fail at once, saying why, if no live agent can take it",
    )


def task_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The task the flags of ``task_arguments`` describe."""
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload is not JSON: {exc.msg}") from exc
    return {
        "kind": args.kind,
        "requires": args.require,
        "payload": payload,
        "priority": args.priority,
        "fail_unroutable": args.fail_unroutable,
    }


def document(name: str) -> Any:
    """The JSON or YAML document in file ``name`` (``-``: JSON on stdin)."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTask(f"{name}: not UTF-8 text (byte {exc.start})") from exc
    return _parse(name, text)


def _parse(name: str, text: str) -> Any:
    """JSON, or YAML for ``.yaml``/``.yml`` files."""
    if name.endswith((".yaml", ".yml")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidTask(f"{name}: not YAML ({_yaml_problem(exc)})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidTask(f"{name}: not JSON ({exc.msg} at line {exc.lineno})") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What the YAML parser found wrong, and where, on one line (its message spans several)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds_of(text: str, *, flag: str) -> float:
    """A duration such as ``30s``, ``5m``, ``2h`` or ``1d``, in seconds; ``UsageError`` naming ``flag``."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise UsageError(f"{flag} {text!r}: use a number with s, m, h or d, e.g. 30s")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def not_before(at: str | None, after: str | None) -> str | None:
    """``--at`` (ISO 8601 with a time zone), or ``--in`` from now, as ISO 8601."""
    if at is not None and after is not None:
        raise UsageError("give --at or --in, not both")
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise UsageError(
                f"--at {at!r}: give a time in ISO 8601 with its time zone (2026-12-05T10:00:00Z)"
            )
        return when.isoformat()
    if after is None:
        return None
    return (utcnow() + timedelta(seconds=seconds_of(after, flag="--in"))).isoformat()
