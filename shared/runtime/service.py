"""Wiring every service shares: consume loop, pool, HTTP app.

A service's `main` builds its `Stage`, its consume loop with `subscribe_stage`, and
serves `make_app(...)` with uvicorn. FastStream's broker gives the app its broker
connection check and middlewares; consuming is the runtime's own loop
(shared/runtime/consume.py), which costs no sleep and no round trip between batches. The HTTP app gives
`/metrics`, `/healthz` (the process is alive and its consumers not stalled for
long) and `/readyz` (database and broker reachable, consumers started and
fetching), the stage's dead-letter routes (shared/runtime/dead_letter_api.py), plus
whatever routes the service adds.
"""

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from fastapi import FastAPI, Response
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared.runtime import asyncapi, tracing
from shared.runtime.consume import StageConsumer
from shared.runtime.consumer_health import ConsumerHealth
from shared.runtime.dead_letter_api import dead_letter_router
from shared.runtime.dead_letters import DeadLetterBreaker
from shared.runtime.db import apply_migrations, create_pool
from shared.runtime.http_limits import BodySizeLimit
from shared.runtime.kafka_auth import KafkaAuth
from shared.runtime.lag import lag_forever
from shared.runtime.logs import configure_logging
from shared.runtime.settings import ServiceSettings
from shared.runtime.stage import Stage
from shared.runtime.staff import StaffAuth, StaffVerifier

log = structlog.get_logger()


def make_broker(settings: ServiceSettings) -> KafkaBroker:
    # The broker neither consumes nor publishes (the consume loop and the outbox have their own clients):
    # it is the connection readyz pings.
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        security=KafkaAuth.from_settings(settings).faststream_security(),
        graceful_timeout=settings.graceful_timeout_seconds,
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=settings.service_name)],
    )


def subscribe_stage(stage: Stage, *topics: str, group_id: str, max_records: int) -> StageConsumer:
    """The consume loop (shared/runtime/consume.py) feeding `stage` from `topics`: offsets are committed only
    after the stage has saved the batch (at-least-once; the inbox makes that effectively once)."""
    return StageConsumer(stage, topics, group_id=group_id, max_records=max_records)


def make_app(
    settings: ServiceSettings,
    *,
    broker: KafkaBroker,
    stage: Stage,
    consumers: Sequence[StageConsumer],
    migrations: Path,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
    title: str,
    body_limits: dict[str, int] | None = None,
) -> FastAPI:
    """The service process: lifespan starts pool, migrations, broker and background loops; at stop it
    awaits `closers` (HTTP clients) once the loops are done."""
    state = {"ready": False}
    stage.breaker = DeadLetterBreaker(stage.schema, settings.dead_letter_limit_per_minute)
    health = ConsumerHealth(list(consumers), settings.consumer_ready_within_seconds,
                            settings.consumer_live_within_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(settings.service_name, settings.log_level)
        if settings.migrate_on_start:
            ran = await apply_migrations(settings.database_url, stage.schema, migrations)
            log.info("migrations_applied", schema=stage.schema, versions=ran)
        pool = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                                 max_size=settings.db_pool_max)
        auth = KafkaAuth.from_settings(settings)
        await stage.start(pool, settings.kafka_bootstrap_servers, settings.service_name, settings.kafka_linger_ms,
                          auth=auth)
        app.state.pool = pool
        await broker.start()
        for consumer in consumers:
            await consumer.start(settings.kafka_bootstrap_servers, settings.service_name, auth=auth,
                                 fetch_min_bytes=settings.kafka_fetch_min_bytes,
                                 fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                                 fetch_idle_wait_ms=settings.kafka_fetch_idle_wait_ms)
        tasks = [asyncio.create_task(stage.relay_forever()), asyncio.create_task(health.export_forever()),
                 asyncio.create_task(stage.prune_inbox_forever(settings.inbox_retention_days))]
        tasks += [asyncio.create_task(job()) for job in background]
        if settings.consumer_lag_interval_seconds > 0:
            tasks += [asyncio.create_task(lag_forever(settings.kafka_bootstrap_servers, subscriber.group_id,
                                                      list(subscriber.topic_names),
                                                      settings.consumer_lag_interval_seconds, auth=auth))
                      for subscriber in consumers]
        state["ready"] = True
        log.info("service_started", port=settings.http_port)
        try:
            yield
        finally:
            state["ready"] = False
            log.info("service_stopping")
            # Stops consuming, lets the batch in hand finish within graceful_timeout, commits.
            for consumer in consumers:
                await consumer.stop(settings.graceful_timeout_seconds)
            await broker.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for close in closers:
                await close()
            await stage.stop()
            await pool.close()
            tracing.shutdown()  # tracing: export the spans still buffered
            log.info("service_stopped")

    app = FastAPI(title=title, lifespan=lifespan)
    tracing.configure(settings, app)  # tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    # `body_limits`: path prefix -> bytes, for routes that take more (a settlement file upload).
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes, per_path=body_limits)
    app.include_router(asyncapi.router(settings.service_name))
    app.include_router(dead_letter_router(settings.service_name, stage,
                                          StaffAuth(StaffVerifier.from_settings(settings))))

    @app.get("/healthz", include_in_schema=False)
    async def healthz(response: Response) -> dict:
        # Alive = not stuck: a consumer that stopped fetching for longer than the live bound gets the
        # process restarted (the broker being down for that long does too; a fresh start reconnects).
        if state["ready"] and not health.live():
            response.status_code = 503
            return {"status": "stalled", "consumer_last_poll_age_seconds": health.ages()}
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict:
        checks = {"started": state["ready"]}
        if state["ready"]:
            try:
                async with app.state.pool.acquire(timeout=2) as conn:
                    await conn.fetchval("SELECT 1")
                checks["database"] = True
            except Exception:
                checks["database"] = False
            checks["kafka"] = await broker.ping(timeout=2)
            checks["consuming"] = health.ready()
        ok = all(checks.values()) and len(checks) == 4
        response.status_code = 200 if ok else 503
        # The pid lets a supervisor tell its own process from another one answering on the port.
        return {"status": "ready" if ok else "not_ready", "checks": checks, "pid": os.getpid()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
