"""The gateway call's own cost: CPU of the caller per request, httpx against aiohttp, with and without `stripe`.

Against the stack's simulator (`make up` first): it makes a few PaymentIntents, then reads them
`--requests` times with `--concurrency` in flight through each client in turn, twice over, and prints
the caller's CPU (process time) per request and the requests per second. This is what chose aiohttp
for the hot path (shared/runtime/http_client.py).

    python -m tools.bench_http --requests 1000 --concurrency 20
"""

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import httpx
import stripe
import typer
from rich.console import Console
from rich.table import Table

from devstack.stack import Stack
from shared.runtime.http_client import StripeHttp

# The package's request-path log calls, as shared/runtime/http_client.py leaves them (lazy) and as they come.
_LOG_CALLS = ("log_info", "log_debug")

PAYMENTS = 50


async def _make_payments(base: str, key: str) -> list[str]:
    ids = [f"pi_benchhttp{secrets.token_hex(8)}" for _ in range(PAYMENTS)]
    async with httpx.AsyncClient(timeout=10) as http:
        for payment_id in ids:
            answer = await http.post(f"{base}/v1/payment_intents", headers={"Authorization": f"Bearer {key}"},
                                     data={"id": payment_id, "amount": 1000, "currency": "eur", "confirm": "true"})
            answer.raise_for_status()
    return ids


async def _timed(call: Callable[[str], Awaitable[None]], ids: list[str], concurrency: int) -> tuple[float, float]:
    """(CPU ms per request, requests per second) of `call` over `ids` with `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(payment_id: str) -> None:
        async with gate:
            await call(payment_id)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(payment_id) for payment_id in ids))
    return 1000 * (time.process_time() - cpu) / len(ids), len(ids) / (time.perf_counter() - wall)


@contextlib.contextmanager
def _eager(lazy: dict) -> Iterator[None]:
    """The package's own (eager) log calls for a whole timed run: switched per call, one call finishing
    would switch them back under the others still in flight."""
    for name in _LOG_CALLS:
        setattr(stripe._api_requestor, name, lazy[name].__wrapped__)
    try:
        yield
    finally:
        for name in _LOG_CALLS:
            setattr(stripe._api_requestor, name, lazy[name])


async def _run(base: str, key: str, requests: int, concurrency: int) -> list[tuple[str, float, float]]:
    ids = await _make_payments(base, key)
    ids = (ids * (requests // PAYMENTS + 1))[:requests]
    auth = {"Authorization": f"Bearer {key}"}
    over_httpx = stripe.HTTPXClient(timeout=10)
    over_aiohttp = stripe.AIOHTTPClient(timeout=10)
    clients = {name: stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=0, http_client=http)
               for name, http in (("httpx", over_httpx), ("aiohttp", over_aiohttp))}
    hot = StripeHttp(key, base, 10)
    bare_httpx = httpx.AsyncClient(timeout=10)
    bare_aiohttp = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def via_stripe_httpx(payment_id: str) -> None:
        await clients["httpx"].v1.payment_intents.retrieve_async(payment_id, {"expand": ["latest_charge"]})

    async def via_stripe_aiohttp(payment_id: str) -> None:
        await clients["aiohttp"].v1.payment_intents.retrieve_async(payment_id, {"expand": ["latest_charge"]})

    async def via_httpx(payment_id: str) -> None:
        answer = await bare_httpx.get(f"{base}/v1/payment_intents/{payment_id}", headers=auth)
        answer.raise_for_status()
        answer.json()

    async def via_aiohttp(payment_id: str) -> None:
        async with bare_aiohttp.get(f"{base}/v1/payment_intents/{payment_id}", headers=auth) as answer:
            answer.raise_for_status()
            await answer.json()

    async def via_hot_path(payment_id: str) -> None:
        await hot.call("get", hot.path("/v1/payment_intents/{}", payment_id), {"expand": ["latest_charge"]})

    lazy = {name: getattr(stripe._api_requestor, name) for name in _LOG_CALLS}
    # (name, call, with the package's own eager log calls for the whole timed run)
    calls = [("stripe over httpx", via_stripe_httpx, False), ("stripe over aiohttp", via_stripe_aiohttp, False),
             ("hot path: StripeHttp raw, lazy log lines", via_hot_path, False),
             ("hot path, the package's eager log lines", via_hot_path, True),
             ("httpx", via_httpx, False), ("aiohttp", via_aiohttp, False)]
    results = []
    try:
        for round_ in (1, 2):  # the second round is the one without connection set-up
            for name, call, eager in calls:
                with _eager(lazy) if eager else contextlib.nullcontext():
                    cpu_ms, per_second = await _timed(call, ids, concurrency)
                results.append((f"{name} (round {round_})", cpu_ms, per_second))
    finally:
        await over_httpx.close_async()
        await over_aiohttp.close_async()
        await hot.close()
        await bare_httpx.aclose()
        await bare_aiohttp.close()
    return results


def main(requests: int = typer.Option(1000, help="reads per client and round"),
         concurrency: int = typer.Option(20, help="reads in flight")) -> None:
    stack = Stack(run_dir=Path(os.environ.get("REFUND_RUN_DIR", ".run/dev")))
    base = f"{stack.service_url('gatewaysim')}/stripe"
    key = stack.gateway_routes()["stripe"]["api_key"]
    table = Table(title=f"GET /v1/payment_intents/{{id}} at the simulator, {concurrency} in flight")
    for column in ("client", "caller CPU ms/request", "requests/s"):
        table.add_column(column, justify="right" if column != "client" else "left")
    for name, cpu_ms, per_second in asyncio.run(_run(base, key, requests, concurrency)):
        table.add_row(name, f"{cpu_ms:.3f}", f"{per_second:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    typer.run(main)
