"""JSON logs through structlog; stdlib loggers (aiokafka, uvicorn) go the same way."""

import logging
import sys

import structlog

from shared.runtime.safe_errors import exception_text

# Tracebacks name the fields a ValidationError found broken, never the values (no contact data in logs).
_render_exceptions = structlog.processors.ExceptionRenderer(exception_text)


def configure_logging(service: str, level: str = "INFO") -> None:
    shared_processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared_processors, _render_exceptions, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render_exceptions,
                    structlog.processors.JSONRenderer()],
        foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Both log every HTTP call at INFO: two lines per gateway call, the busiest log lines a service would
    # write. Failures still reach the log through the callers' own warnings and errors.
    for chatty in ("httpx", "stripe"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.contextvars.bind_contextvars(service=service)
