"""Notify process: `uvicorn services.notify.main:app`."""

from pathlib import Path

from fastapi import HTTPException

from services.notify import inquiries, watch
from services.notify.handlers import SOURCE, project, republish
from shared import topics
from shared.metrics import backlog_query, read_backlog, sweep_forever
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage


class NotifySettings(ServiceSettings):
    service_name: str = "notify"
    # Notify's own stage: a status change must be on the feed within this (deploy/sla.yaml default: 15m).
    notify_sla_seconds: float = 900.0


async def project_and_watch(conn, item):
    await watch.track(conn, item)
    return await project(conn, item)


async def sweep_stage_watch() -> None:
    await watch.sweep_forever(lambda: stage.pool, settings.sweep_interval_seconds)


async def sweep_own_backlog() -> None:
    # Status updates decided but not yet on the feed.
    await sweep_forever("notify", lambda: read_backlog(stage.pool, OWN_BACKLOG, settings.notify_sla_seconds),
                        settings.sweep_interval_seconds)


settings = NotifySettings()
OWN_BACKLOG = backlog_query("notify.outbox", since="created_at", open_rows="true")
broker = make_broker(settings)
stage = Stage(schema="notify", source=SOURCE, decide=project_and_watch, redelivered=republish)
subscribe_stage(broker, stage, *topics.LIFECYCLE, group_id="refund-notify", max_records=settings.batch_max_records)
app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[sweep_stage_watch, sweep_own_backlog], title="Refund notify")


@app.get("/v1/refunds/{refund_id}")
async def refund_status(refund_id: str) -> dict:
    """A refund's current status, reason codes, ETA and stage timeline."""
    row = await app.state.pool.fetchrow("SELECT * FROM notify.refund_status WHERE refund_id = $1", refund_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no refund {refund_id}")
    await inquiries.record_lookup(app.state.pool, refund_id)
    return {key: row[key] for key in ("refund_id", "request_id", "source", "order_id", "status", "amount",
                                      "reason_codes", "eta", "timeline", "updated_at")}
