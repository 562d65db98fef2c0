"""Reconcile process: `uvicorn services.reconcile.main:app`."""

from pathlib import Path

from gatewaysim.gateway import MIGRATIONS as SIM_MIGRATIONS, SCHEMA as SIM_SCHEMA, SimGateway
from services.reconcile.handlers import SOURCE, Matcher, record_paid
from shared import topics
from shared.db import apply_migrations
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


app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[match_settlements], title="Refund reconcile")
