"""Background jobs that run on a fixed interval for the life of a service."""

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()


async def every(seconds: float, job: Callable[[], Awaitable[object]], *, name: str) -> None:
    """Run `job` now and then every `seconds`; a failed round is logged (`<name>_failed`) and the next one runs."""
    while True:
        try:
            await job()
        except Exception:
            log.exception(f"{name}_failed")
        await asyncio.sleep(seconds)
