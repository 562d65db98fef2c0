"""The HTTP client for calls on the refund's hot path (gateway reads, refunds, webhooks): aiohttp.

Measured on the 2-core machine (`python -m tools.bench_http`, 20 calls in flight against the
simulator): one Stripe read through the `stripe` package cost 2.3 ms of the caller's CPU over
`stripe.HTTPXClient` and 0.4 ms over `stripe.AIOHTTPClient`; a bare GET 1.9 ms with httpx and 0.2 ms
with aiohttp (httpcore scans every pooled connection's socket on each request). Scheduled, low-volume
calls (report pulls, the console, tools) stay on httpx.

A session must be made inside the running event loop, so `LazySession` opens it on first use; the
Stripe adapters get the same from `stripe.AIOHTTPClient`, which opens its own session lazily too.
"""

import logging
from collections.abc import Callable, Mapping
from urllib.parse import quote_plus

import aiohttp
import stripe
from stripe import _api_requestor, _util

# What a failed exchange raises: the client's own errors, and the total timeout (asyncio.TimeoutError).
HTTP_ERRORS = (aiohttp.ClientError, TimeoutError)


class LazySession:
    """One keep-alive `aiohttp.ClientSession` with a total timeout and default headers, opened on first use."""

    def __init__(self, timeout_seconds: float, headers: dict[str, str] | None = None) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _only_when_heard(level: int, stripe_log: Callable[..., None]) -> Callable[..., None]:
    """`stripe_log` (the package's log_info or log_debug), called only when someone would hear it: the
    package's console level (`stripe.log`, STRIPE_LOG) or its `stripe` logger at `level`. The package
    formats each line before asking (logfmt: a regex per field, the whole response body for the debug
    line): with neither on, 22% of the py-spy samples inside the package's request path, 6% of payout's
    CPU at 130 refunds/s. The package's internals are looked up here, so a release without them fails
    at import, not on a payout."""
    console_levels = ("debug",) if level == logging.DEBUG else ("debug", "info")
    console_level, logger = _util._console_log_level, _util.logger

    def log(message: str, **params: object) -> None:
        if console_level() in console_levels or logger.isEnabledFor(level):
            stripe_log(message, **params)

    log.__wrapped__ = stripe_log  # type: ignore[attr-defined]
    return log


def hush_stripe_formatting() -> None:
    """Make the request path's log calls lazy (what they write, and where, stays the package's); once."""
    for name, level in (("log_info", logging.INFO), ("log_debug", logging.DEBUG)):
        current = getattr(_api_requestor, name)
        if not hasattr(current, "__wrapped__"):
            setattr(_api_requestor, name, _only_when_heard(level, current))


hush_stripe_formatting()


class StripeHttp:
    """The official client over aiohttp (`client`), without its own retries: asking again is the stage's
    business (durable, with backoff), not the HTTP client's."""

    def __init__(self, api_key: str, base: str, timeout_seconds: float) -> None:
        self._http = stripe.AIOHTTPClient(timeout=timeout_seconds)
        self.client = stripe.StripeClient(api_key, base_addresses={"api": base}, max_network_retries=0,
                                          http_client=self._http)

    async def call(self, method: str, path: str, params: Mapping | None = None, **options: str) -> dict:
        """One call through the client's raw request -- its auth, form encoding and mapping of error
        answers to `stripe.StripeError` -- answered as the response's JSON object. The typed services
        build StripeObjects that the adapters turn straight back into dicts: 0.45-0.61 ms of the caller's
        CPU per payment read here, against 0.34-0.36 ms this way (same answer)."""
        return (await self.client.raw_request_async(method, path, **dict(params or {}), **options)).data

    @staticmethod
    def path(template: str, *ids: str) -> str:
        """`template` with its `{}` filled by the ids, quoted as the typed services quote them."""
        return template.format(*(quote_plus(i) for i in ids))

    async def close(self) -> None:
        await self._http.close_async()
