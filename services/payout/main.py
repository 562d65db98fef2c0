"""Payout process: `uvicorn services.payout.main:app`."""

from pathlib import Path

from gatewaysim.gateway import MIGRATIONS as SIM_MIGRATIONS, SCHEMA as SIM_SCHEMA, SimGateway
from services.payout.gateway import SimGatewayAdapter
from services.payout.handlers import SOURCE, PayoutExecutor, record_intent
from shared import topics
from shared.db import apply_migrations
from shared.metrics import backlog_query, read_backlog, sweep_forever
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage


class PayoutSettings(ServiceSettings):
    service_name: str = "payout"
    payout_sla_seconds: float = 120.0
    # A `submitting` intent older than this is presumed orphaned by a crash and re-claimed.
    payout_reclaim_after_seconds: float = 30.0
    sim_decline_percent: int = 2


settings = PayoutSettings()
broker = make_broker(settings)
stage = Stage(schema="payout", source=SOURCE, decide=record_intent)
subscribe_stage(broker, stage, topics.APPROVED, group_id="refund-payout", max_records=settings.batch_max_records)


async def execute_payouts() -> None:
    await apply_migrations(settings.database_url, SIM_SCHEMA, SIM_MIGRATIONS, stage_tables=False)
    gateway = SimGatewayAdapter(SimGateway(stage.pool, settings.sim_decline_percent))
    executor = PayoutExecutor(stage, gateway, reclaim_after_seconds=settings.payout_reclaim_after_seconds,
                              sla_seconds=settings.payout_sla_seconds)
    await executor.run_forever()


BACKLOG = backlog_query("payout.payouts", since="created_at", open_rows="status IN ('pending', 'submitting')")


async def sweep_backlog() -> None:
    await sweep_forever("payout", lambda: read_backlog(stage.pool, BACKLOG, settings.payout_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[execute_payouts, sweep_backlog], title="Refund payout")
