"""Wiring every service shares: broker with an explicit ack policy, pool, HTTP app.

A service's `main` builds its `Stage`, calls `make_broker`, subscribes with
`subscribe_stage`, and serves `make_app(...)` with uvicorn. The HTTP app gives
`/metrics`, `/healthz` (the process is alive and its consumers not stalled for
long) and `/readyz` (database and broker reachable, consumers started and
fetching), plus whatever routes the service adds.
"""

import asyncio
import os
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from aiokafka import ConsumerRecord
from fastapi import FastAPI, Response
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared import tracing
from shared.consumer_health import ConsumerHealth
from shared.db import apply_migrations, create_pool
from shared.http_limits import BodySizeLimit
from shared.kafka_auth import KafkaAuth
from shared.lag import lag_forever
from shared.logs import configure_logging
from shared.settings import ServiceSettings
from shared.stage import Stage

log = structlog.get_logger()


def make_broker(settings: ServiceSettings) -> KafkaBroker:
    # The broker only consumes: stages publish through their outbox's own producer.
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.service_name,
        security=KafkaAuth.from_settings(settings).faststream_security(),
        graceful_timeout=settings.graceful_timeout_seconds,
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=settings.service_name)],
    )


async def _safe_parser(records: tuple[ConsumerRecord, ...], original: Callable) -> object:
    # FastStream's parser decodes every header as UTF-8 and would raise on a
    # binary header, before our handler could dead-letter the record: a poison
    # message. Parse sanitised copies, keep the untouched records.
    safe = tuple(
        dataclasses.replace(r, headers=[(k, v.decode(errors="replace").encode()) for k, v in r.headers])
        for r in records
    )
    message = await original(safe)
    message.raw_message = records
    return message


async def _raw_decoder(message: object) -> None:
    return None  # the stage decodes records itself; FastStream must not guess a body type


def subscribe_stage(broker: KafkaBroker, stage: Stage, *topics: str, group_id: str, max_records: int) -> None:
    """Consume `topics` in batches; commit offsets only after the stage has saved its work.

    AckPolicy.NACK_ON_ERROR: success commits, an exception seeks back so the
    batch is redelivered (at-least-once; the inbox makes that effectively once).
    """
    @broker.subscriber(
        *topics, group_id=group_id, batch=True, max_records=max_records, batch_timeout_ms=50,
        auto_offset_reset="earliest", ack_policy=AckPolicy.NACK_ON_ERROR,
        parser=_safe_parser, decoder=_raw_decoder,
    )
    async def on_batch(message: KafkaMessage) -> None:
        await stage.process(message.raw_message)


def make_app(
    settings: ServiceSettings,
    *,
    broker: KafkaBroker,
    stage: Stage,
    migrations: Path,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    title: str,
    body_limits: dict[str, int] | None = None,
) -> FastAPI:
    """The service process: lifespan starts pool, migrations, broker and background loops."""
    state = {"ready": False}
    consumers = ConsumerHealth(list(broker.subscribers), settings.consumer_ready_within_seconds,
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
        tasks = [asyncio.create_task(stage.relay_forever()), asyncio.create_task(consumers.export_forever())]
        tasks += [asyncio.create_task(job()) for job in background]
        if settings.consumer_lag_interval_seconds > 0:
            tasks += [asyncio.create_task(lag_forever(settings.kafka_bootstrap_servers, subscriber.group_id,
                                                      list(subscriber.topic_names),
                                                      settings.consumer_lag_interval_seconds, auth=auth))
                      for subscriber in broker.subscribers]
        state["ready"] = True
        log.info("service_started", port=settings.http_port)
        try:
            yield
        finally:
            state["ready"] = False
            log.info("service_stopping")
            # Stops consuming, lets the batch in hand finish within graceful_timeout, commits.
            await broker.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stage.stop()
            await pool.close()
            tracing.shutdown()  # tracing: export the spans still buffered
            log.info("service_stopped")

    app = FastAPI(title=title, lifespan=lifespan)
    tracing.configure(settings, app)  # tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    # `body_limits`: path prefix -> bytes, for routes that take more (a settlement file upload).
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes, per_path=body_limits)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(response: Response) -> dict:
        # Alive = not stuck: a consumer that stopped fetching for longer than the live bound gets the
        # process restarted (the broker being down for that long does too; a fresh start reconnects).
        if state["ready"] and not consumers.live():
            response.status_code = 503
            return {"status": "stalled", "consumer_last_poll_age_seconds": consumers.ages()}
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
            checks["consuming"] = consumers.ready()
        ok = all(checks.values()) and len(checks) == 4
        response.status_code = 200 if ok else 503
        # The pid lets a supervisor tell its own process from another one answering on the port.
        return {"status": "ready" if ok else "not_ready", "checks": checks, "pid": os.getpid()}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
