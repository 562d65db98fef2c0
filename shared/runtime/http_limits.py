"""Limits on public HTTP: requests per caller (429 with Retry-After) and request body size (413).

Rates are `limits` strings ("100/second", "30/minute"), counted in a moving window per caller key
(an API key, a client address). The window lives in `storage_uri`: `memory://` counts per replica;
point every replica at one Redis (`redis://…`) to count across them.
"""

import math
import time

from fastapi import HTTPException
from limits import parse
from limits.storage import storage_from_string
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RATE_LIMITED = Counter("refund_http_rate_limited_total", "Requests answered 429, by limit", ["limit"])
TOO_LARGE = Counter("refund_http_body_too_large_total", "Requests answered 413, by path prefix", ["path"])


class RateLimit:
    """One named limit, e.g. intake's per API key."""

    def __init__(self, name: str, rate: str, storage_uri: str = "memory://") -> None:
        self.name = name
        self.rate = parse(rate)
        # limits names its asyncio storages async+<scheme>.
        self.limiter = MovingWindowRateLimiter(storage_from_string(
            storage_uri if storage_uri.startswith("async+") else f"async+{storage_uri}"))

    async def check(self, caller: str) -> None:
        """Count one request of `caller`; HTTP 429 with Retry-After once it is over the rate."""
        if await self.limiter.hit(self.rate, self.name, caller):
            return
        reset_at, _ = await self.limiter.get_window_stats(self.rate, self.name, caller)
        RATE_LIMITED.labels(self.name).inc()
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise HTTPException(429, f"too many requests: the limit is {self.rate}; retry in {retry_after} s",
                            headers={"Retry-After": str(retry_after)})


class BodySizeLimit:
    """ASGI middleware: a body over the limit (by Content-Length, or as it streams in) gets 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    def _limit(self, path: str) -> tuple[str, int]:
        for prefix, limit in self.per_path.items():
            if path.startswith(prefix):
                return prefix, limit
        return "*", self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        prefix, limit = self._limit(scope["path"])
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(prefix, limit, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(prefix, limit, send)

    @staticmethod
    async def _refuse(prefix: str, limit: int, send: Send) -> None:
        TOO_LARGE.labels(prefix).inc()
        body = f'{{"detail": "the request body is over the limit of {limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
