"""The simulator process: `uvicorn gatewaysim.main:app` (or `python -m gatewaysim`).

At start it applies its migrations to schema `gateway_sim`, creates the seed
payments, and runs two background loops: every SIM_TICK_SECONDS time acts on
the ledger (confirmations, reversals) and due webhooks are sent; every
SIM_ADYEN_BATCH_SECONDS each Adyen-shaped account's open lines are closed into
a settlement batch.
"""

import asyncio
import contextlib
import os

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

from gatewaysim import adyen_api, ledger, stripe_api
from gatewaysim.settings import SimSettings
from gatewaysim.web import ApiError, SimContext
from gatewaysim.webhooks import WebhookSender
from shared.runtime.db import apply_migrations, create_pool
from shared.runtime.logs import configure_logging
from shared.runtime.periodic import every

log = structlog.get_logger()
CHANGES = Counter("gatewaysim_ledger_changes_total", "Refunds confirmed or reversed by the passing of time")
BATCHES = Counter("gatewaysim_settlement_batches_total", "Adyen-shaped settlement batches closed", ["account"])
settings = SimSettings()


async def _seed(ctx: SimContext) -> None:
    for seed in ctx.settings.seed_payments:
        _, same = await ledger.create_payment(ctx.pool, seed.account, seed.id, seed.amount, seed.currency.upper())
        if not same:
            log.error("seed_payment_conflict", account=seed.account, payment_id=seed.id)


async def _tick(ctx: SimContext, sender: WebhookSender) -> None:
    async with ctx.pool.acquire() as conn, conn.transaction():
        changed = await ledger.advance(conn, list(ctx.accounts))
    CHANGES.inc(changed)
    await sender.send_due()


async def _close_batches(ctx: SimContext) -> None:
    for name, account in ctx.accounts.items():
        if account.personality == "adyen" and await ledger.close_batch(ctx.pool, name) is not None:
            BATCHES.labels(name).inc()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    configure_logging("gatewaysim", settings.log_level)
    ran = await apply_migrations(settings.database_url, ledger.SCHEMA, ledger.MIGRATIONS, stage_tables=False)
    log.info("migrations_applied", schema=ledger.SCHEMA, versions=ran)
    pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
    ctx = SimContext(pool, settings, settings.faults(), settings.fx_rates)
    await _seed(ctx)
    sender = WebhookSender(pool, settings.accounts, max_attempts=settings.webhook_max_attempts,
                           retry_base_seconds=settings.webhook_retry_base_seconds,
                           timeout_seconds=settings.webhook_timeout_seconds)
    app.state.sim = ctx
    tasks = [asyncio.create_task(every(settings.tick_seconds, lambda: _tick(ctx, sender), name="ledger_tick")),
             asyncio.create_task(every(settings.adyen_batch_seconds, lambda: _close_batches(ctx),
                                       name="settlement_batches"))]
    app.state.ready = True
    log.info("simulator_started", port=settings.http_port, accounts=sorted(settings.accounts))
    try:
        yield
    finally:
        app.state.ready = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.close()
        await pool.close()
        log.info("simulator_stopped")


app = FastAPI(title="Gateway simulator", lifespan=lifespan)
app.state.ready = False
app.include_router(stripe_api.router)
app.include_router(adyen_api.router)


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> Response:
    return exc.answer.response()


@app.get("/healthz", include_in_schema=False)
async def healthz() -> dict:
    return {"status": "ok"}


@app.get("/readyz", include_in_schema=False)
async def readyz(response: Response) -> dict:
    database = False
    if app.state.ready:
        try:
            async with app.state.sim.pool.acquire(timeout=2) as conn:
                database = await conn.fetchval("SELECT true")
        except Exception:
            database = False
    ok = app.state.ready and database
    response.status_code = 200 if ok else 503
    # The pid lets a supervisor tell its own process from another one answering on the port.
    return {"status": "ready" if ok else "not_ready", "checks": {"started": app.state.ready, "database": database},
            "pid": os.getpid()}


@app.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
