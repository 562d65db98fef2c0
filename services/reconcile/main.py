"""Reconcile process: `uvicorn services.reconcile.main:app`."""

from pathlib import Path

from gatewaysim.gateway import MIGRATIONS as SIM_MIGRATIONS, SCHEMA as SIM_SCHEMA, SimGateway
from services.reconcile.api import settlement_router
from services.reconcile.handlers import SOURCE, Matcher, check_ledger, record_paid
from shared import topics
from shared.db import apply_migrations
from shared.metrics import backlog_query, read_backlog, sweep_forever
from shared.periodic import every
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage
from shared.staff import StaffAuth, StaffVerifier


class ReconcileSettings(ServiceSettings):
    service_name: str = "reconcile"
    # A paid refund with no settlement line after this is `missing_in_report`.
    reconcile_sla_seconds: float = 300.0
    # A report line with no paid refund after this is `missing_internally` (paid events may lag the report).
    reconcile_missing_internally_after_seconds: float = 60.0
    # The layout the simulator writes its settlement report in: stripe | adyen.
    reconcile_sim_report_format: str = "stripe"
    reconcile_ledger_check_seconds: float = 5.0
    # The most a gateway may charge on a refund, in basis points of it; more is a fee_mismatch.
    reconcile_max_fee_bps: int = 300


settings = ReconcileSettings()
broker = make_broker(settings)
stage = Stage(schema="reconcile", source=SOURCE, decide=record_paid)
subscribe_stage(broker, stage, topics.PAID, group_id="refund-reconcile", max_records=settings.batch_max_records)


async def match_settlements() -> None:
    await apply_migrations(settings.database_url, SIM_SCHEMA, SIM_MIGRATIONS, stage_tables=False)
    matcher = Matcher(stage, SimGateway(stage.pool), gateway="sim", report_format=settings.reconcile_sim_report_format,
                      sla_seconds=settings.reconcile_sla_seconds,
                      missing_internally_after_seconds=settings.reconcile_missing_internally_after_seconds,
                      max_fee_bps=settings.reconcile_max_fee_bps)
    await matcher.run_forever()


async def watch_ledger() -> None:
    await every(settings.reconcile_ledger_check_seconds, lambda: check_ledger(stage.pool), name="ledger_watch")


BACKLOG = backlog_query("reconcile.payouts", since="paid_at", open_rows="state = 'awaiting'")


async def sweep_backlog() -> None:
    await sweep_forever("reconcile", lambda: read_backlog(stage.pool, BACKLOG, settings.reconcile_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[match_settlements, watch_ledger, sweep_backlog], title="Refund reconcile")
app.include_router(settlement_router(stage, StaffAuth(StaffVerifier.from_settings(settings))))
