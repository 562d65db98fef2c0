"""Reconcile process: `uvicorn services.reconcile.main:app`."""

import asyncio
from pathlib import Path

from services.reconcile.api import settlement_router
from services.reconcile.handlers import SOURCE, LedgerWatch, Matcher, record_paid
from services.reconcile.pulls import ReportPuller
from services.reconcile.reports import report_source
from shared.contract import topics
from shared.contract.events import TYPE_OF, RefundPaid
from shared.runtime.gateway_routes import GatewayRoutes
from shared.runtime.metrics import backlog_query, read_backlog, sweep_forever
from shared.runtime.periodic import every
from shared.runtime.service import make_app, make_broker, subscribe_stage
from shared.runtime.settings import ServiceSettings
from shared.runtime.stage import Handler, Stage
from shared.runtime.staff import StaffAuth, StaffVerifier


class ReconcileSettings(ServiceSettings):
    service_name: str = "reconcile"
    # The largest settlement file `POST /v1/settlements` takes (413 above it).
    reconcile_max_upload_bytes: int = 20 * 1024 * 1024
    # A paid refund with no settlement line after this is `missing_in_report`.
    reconcile_sla_seconds: float = 300.0
    # A report line with no paid refund after this is `missing_internally` (paid events may lag the report).
    reconcile_missing_internally_after_seconds: float = 60.0
    reconcile_ledger_check_seconds: float = 5.0
    # How often the running ledger totals are compared with the tables themselves (a full scan).
    reconcile_ledger_recheck_seconds: float = 3600.0
    # The most a gateway may charge on a refund, in basis points of it (rounded up to a minor unit);
    # more is a fee_mismatch.
    reconcile_max_fee_bps: int = 300
    # A refund the gateway settled in another currency matches when within this share of the amount
    # payout expected (its own rate); the difference is recorded. Beyond it: amount_mismatch.
    reconcile_fx_tolerance_bps: int = 50
    # GATEWAY_ROUTES (JSON, shared/runtime/gateway_routes.py), the routes payout pays through: every gateway's
    # settlement reports are pulled from its API, each on this schedule, ingested under the route's name.
    gateway_routes: GatewayRoutes = {}
    reconcile_report_pull_seconds: float = 60.0


settings = ReconcileSettings()
broker = make_broker(settings)
stage = Stage(schema="reconcile", source=SOURCE, handlers={TYPE_OF[RefundPaid]: Handler(record_paid)})
consumer = subscribe_stage(stage, topics.PAID, group_id="refund-reconcile", max_records=settings.batch_max_records)


async def match_settlements() -> None:
    matcher = Matcher(stage, sla_seconds=settings.reconcile_sla_seconds,
                      missing_internally_after_seconds=settings.reconcile_missing_internally_after_seconds,
                      max_fee_bps=settings.reconcile_max_fee_bps, fx_tolerance_bps=settings.reconcile_fx_tolerance_bps)
    await matcher.run_forever()


async def pull_reports() -> None:
    """Each gateway on its own schedule: one that hangs or is down holds up no other."""
    sources = {name: report_source(route) for name, route in settings.gateway_routes.items()}
    pullers = [ReportPuller(stage, name, source) for name, source in sources.items()]
    try:
        await asyncio.gather(*(every(settings.reconcile_report_pull_seconds, puller.pull, name="report_pull")
                               for puller in pullers))
    finally:
        for source in sources.values():
            await source.close()


async def watch_ledger() -> None:
    watch = LedgerWatch(stage.pool, settings.reconcile_ledger_recheck_seconds)
    await watch.start()
    await every(settings.reconcile_ledger_check_seconds, watch.check, name="ledger_watch")


BACKLOG = backlog_query("reconcile.payouts", since="paid_at", open_rows="state = 'awaiting'")


async def sweep_backlog() -> None:
    await sweep_forever("reconcile", lambda: read_backlog(stage.pool, BACKLOG, settings.reconcile_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, consumers=[consumer],
               migrations=Path(__file__).parent / "migrations",
               background=[match_settlements, pull_reports, watch_ledger, sweep_backlog], title="Refund reconcile",
               body_limits={"/v1/settlements": settings.reconcile_max_upload_bytes})
app.include_router(settlement_router(stage, StaffAuth(StaffVerifier.from_settings(settings))))
