"""Reconcile process: `uvicorn services.reconcile.main:app`."""

from pathlib import Path

from gatewaysim.gateway import MIGRATIONS as SIM_MIGRATIONS, SCHEMA as SIM_SCHEMA, SimGateway
from services.reconcile.handlers import SOURCE, Matcher, record_paid
from shared import topics
from shared.db import apply_migrations
from shared.metrics import backlog_query, read_backlog, sweep_forever
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage


class ReconcileSettings(ServiceSettings):
    service_name: str = "reconcile"
    reconcile_sla_seconds: float = 300.0


settings = ReconcileSettings()
broker = make_broker(settings)
stage = Stage(schema="reconcile", source=SOURCE, decide=record_paid)
subscribe_stage(broker, stage, topics.PAID, group_id="refund-reconcile", max_records=settings.batch_max_records)


async def match_settlements() -> None:
    await apply_migrations(settings.database_url, SIM_SCHEMA, SIM_MIGRATIONS, stage_tables=False)
    matcher = Matcher(stage, SimGateway(stage.pool), gateway="sim", sla_seconds=settings.reconcile_sla_seconds)
    await matcher.run_forever()


BACKLOG = backlog_query("reconcile.payouts", since="paid_at", open_rows="state = 'awaiting'")


async def sweep_backlog() -> None:
    await sweep_forever("reconcile", lambda: read_backlog(stage.pool, BACKLOG, settings.reconcile_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[match_settlements, sweep_backlog], title="Refund reconcile")
