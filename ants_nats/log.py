"""structlog configuration: call ``configure_logging`` once, at program start."""

from __future__ import annotations

import logging
import sys

import structlog


class _Stderr:
    """Writes to whatever ``sys.stderr`` is when a line is written, not when logging was set up:
    a program (or a test harness capturing output) may swap it, and a logger holding a stream
    closed since would fail every call."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, json: bool = False, level: str = "INFO") -> None:
    """Configure structlog (and stdlib logging) for the whole process, to stderr.

    ``json=True`` renders one JSON object per line, for log shippers; otherwise a console renderer.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=_Stderr(), level=numeric, format="%(message)s")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    # The processor list is changed in place: loggers already used (structlog caches them) follow
    # the new configuration too, and so does a capture installed on it (structlog.testing).
    processors = structlog.get_config()["processors"]
    processors[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


if not structlog.is_configured():
    # Used as a library, with no configure_logging call: warnings and errors on stderr, never
    # chatter on stdout (a later configure_logging, or the program's own structlog setup, wins).
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
    )


def get_logger(component: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to ``component`` (for example ``"board"``).

    It stays lazy (no ``bind`` here), so modules can create loggers at import time and still obey a
    ``configure_logging`` call made later.
    """
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("ants_nats", component=component)
    return logger
