"""Opening a NATS connection with the options a long-running agent needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from weakref import WeakKeyDictionary

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from .errors import PermissionDenied, ServerUnavailable
from .log import get_logger

log = get_logger("connection")

T = TypeVar("T")


class _Refusals:
    """The permission violations the server reports on one connection, and who awaits one.

    The server answers a forbidden publish with an asynchronous ``-ERR`` while the request itself
    just goes unanswered; a matching report cancels the waiting task (as ``asyncio.timeout``
    does), which turns a long timeout into an immediate, precise error without a task per request.
    """

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[str], bool], asyncio.Task[Any], list[str]]] = []

    def record(self, text: str) -> bool:
        """Report ``text`` to whoever awaits it; whether someone did (then they raise it)."""
        claimed = False
        for matches, task, refused in self._waiters:
            if not refused and matches(text.lower()):
                refused.append(text)
                task.cancel()
                claimed = True
        return claimed

    async def race(self, matches: Callable[[str], bool], work: Awaitable[T], action: str) -> T:
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel, so just wait for the answer
            return await work
        refused: list[str] = []
        waiter = (matches, task, refused)
        self._waiters.append(waiter)
        try:
            return await work
        except asyncio.CancelledError:
            # Ours only if no one else cancelled the task as well.
            if refused and task.uncancel() == 0:
                raise PermissionDenied(f"{action}: refused by the server ({refused[0]})") from None
            raise
        finally:
            self._waiters.remove(waiter)


_refusals: WeakKeyDictionary[Client, _Refusals] = WeakKeyDictionary()
_domains: WeakKeyDictionary[Client, str] = WeakKeyDictionary()
"""The JetStream domain each connection opened by ``connect`` works in (where the board lives)."""


def jetstream(nc: Client) -> JetStreamContext:
    """The JetStream context of ``nc`` in the domain it was connected for (``connect(js_domain=)``):
    an agent on a site's leaf node works a board whose streams live on the hub."""
    return nc.jetstream(domain=_domains.get(nc))


def domain_of(nc: Client) -> str | None:
    """The JetStream domain ``nc`` was connected for (None: its own server's)."""
    return _domains.get(nc)


def api_prefix(nc: Client) -> str:
    """The JetStream API prefix of ``nc``'s domain (``$JS.API``, or ``$JS.<domain>.API``)."""
    domain = _domains.get(nc)
    return f"$JS.{domain}.API" if domain else "$JS.API"


_reconnect_listeners: WeakKeyDictionary[Client, list[Callable[[], None]]] = WeakKeyDictionary()


def on_reconnect(nc: Client, listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` each time ``nc`` reconnects (what was published meanwhile on core
    subjects is lost: state learned from them must be read again); returns the way to stop.
    Only connections opened by ``connect`` report reconnects."""
    listeners = _reconnect_listeners.setdefault(nc, [])
    listeners.append(listener)
    return lambda: listeners.remove(listener) if listener in listeners else None


def without_credentials(url: str) -> str:
    """``url`` (one server or several, comma-separated) with any ``user:password@`` left out: what
    may be logged or shown."""
    shown = []
    for part in url.split(","):
        try:
            split = urlsplit(part.strip())
            host, port = split.hostname, split.port
        except ValueError:
            host, split = None, None  # (not a URL: the error says so)
        if split is not None and "@" not in split.netloc:
            shown.append(part.strip())
            continue
        if split is None or host is None:
            shown.append(part.strip().rpartition("@")[2])
            continue
        netloc = f"[{host}]" if ":" in host else host
        shown.append(
            urlunsplit((split.scheme, netloc if port is None else f"{netloc}:{port}", split.path, "", ""))
        )
    return ",".join(shown)


async def refusable(nc: Client, matches: Callable[[str], bool], work: Awaitable[T], *, action: str) -> T:
    """``work``'s result, or ``PermissionDenied`` naming ``action`` as soon as the server reports a
    permissions violation on ``nc`` whose (lower-cased) text ``matches``.

    Only connections opened by ``connect`` report violations; on others ``work`` runs as it is.
    """
    refusals = _refusals.get(nc)
    if refusals is None:
        return await work
    return await refusals.race(matches, work, action)


def publishing_to(subject: str) -> Callable[[str], bool]:
    """Matches the violation the server reports for a publish to ``subject``."""
    needle = f'publish to "{subject.lower()}"'
    return lambda text: needle in text


def requesting_jetstream(text: str) -> bool:
    """Matches the violation the server reports for a JetStream API request (in any domain)."""
    return 'publish to "$js.api.' in text or ('publish to "$js.' in text and ".api." in text)


@asynccontextmanager
async def connect(
    url: str,
    *,
    name: str = "ants-nats",
    connect_timeout: float = 2.0,
    seed: str | None = None,
    js_domain: str | None = None,
) -> AsyncIterator[Client]:
    """Connect to ``url`` (comma-separated for a cluster), reconnecting forever once connected;
    drains on exit. ``seed`` authenticates with an nkeys user seed (``SU...``). ``js_domain``: the
    JetStream domain the board lives in, when it is not this server's (a leaf node's hub).

    Raises ``ServerUnavailable`` when no server answers at first, ``PermissionDenied`` when the
    server rejects the credentials."""

    rejected: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in text.lower():
            rejected.append(exc)
        if "permissions violation" in text.lower():
            # One awaited raises PermissionDenied with this text; only an unawaited one is logged.
            if refusals.record(text):
                log.debug("nats.permission_denied", error=text)
            else:
                log.error("nats.permission_denied", error=text)
        else:
            log.debug("nats.error", error=text)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("nats.disconnected", url=url)

    async def on_reconnected() -> None:
        log.info("nats.reconnected", url=str(nc.connected_url.geturl()) if nc.connected_url else url)
        for listener in list(_reconnect_listeners.get(nc, ())):
            listener()

    servers = [u.strip() for u in url.split(",") if u.strip()]
    nc = Client()
    refusals = _refusals[nc] = _Refusals()
    if js_domain:
        _domains[nc] = js_domain
    try:
        # With reconnects on, nats-py would retry an unreachable first server forever: bound it.
        async with asyncio.timeout(connect_timeout * len(servers) + 0.5):
            await nc.connect(
                servers=servers,
                name=name,
                # nats-py annotates these as int but takes seconds as float.
                connect_timeout=connect_timeout,  # type: ignore[arg-type]
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                nkeys_seed_str=seed,
            )
    except (OSError, TimeoutError, ValueError, nats.errors.Error) as exc:
        # A client that never got as far as connecting cannot be closed (nats-py asserts).
        with contextlib.suppress(AssertionError, nats.errors.Error):
            await nc.close()
        # With reconnects on, a rejected login surfaces as a timeout: the cause is the last error.
        shown = without_credentials(url)
        if isinstance(exc, nats.errors.AuthorizationError) or rejected:
            raise PermissionDenied(f"NATS at {shown} rejected the credentials") from exc
        if isinstance(exc, ValueError) or "invalid connect url" in str(exc):
            raise ServerUnavailable(
                f"not a NATS URL: {shown!r} (expected e.g. nats://127.0.0.1:4222)"
            ) from exc
        reason = str(exc) or "no answer"
        raise ServerUnavailable(f"cannot connect to NATS at {shown}: {reason}") from exc
    try:
        yield nc
    finally:
        if not nc.is_closed:
            try:
                await nc.drain()
            except (nats.errors.Error, OSError):  # no server to drain to (TimeoutError included)
                # Closing flushes to a socket the server may have reset: closed is closed.
                with contextlib.suppress(nats.errors.Error, OSError):
                    await nc.close()
