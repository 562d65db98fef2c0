"""Payout process: `uvicorn services.payout.main:app`."""

import asyncio
from datetime import timedelta
from pathlib import Path

from gatewaysim.gateway import MIGRATIONS as SIM_MIGRATIONS, SCHEMA as SIM_SCHEMA, SimFaults, SimGateway
from services.payout.domain import RetryPolicy
from services.payout.gateway import Gateway, SimGatewayAdapter
from services.payout.stripe_gateway import StripeGatewayAdapter
from services.payout.handlers import SOURCE, IntentRecorder, PayoutExecutor, PayoutPolicy, ReversalWatcher
from shared import topics
from shared.db import apply_migrations
from shared.metrics import backlog_query, read_backlog, sweep_forever
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage


class PayoutSettings(ServiceSettings):
    service_name: str = "payout"
    payout_sla_seconds: float = 120.0
    # The claim lease: a `submitting` intent whose claim was not renewed for this long is presumed
    # orphaned by a crash and re-claimed. A live worker renews its claim every third of it while the
    # gateway calls run, so this bounds crash recovery, not how long a gateway call may take.
    payout_reclaim_after_seconds: float = 30.0
    payout_gateway_timeout_seconds: float = 10.0
    payout_retry_base_seconds: float = 1.0
    payout_retry_cap_seconds: float = 300.0
    payout_retry_max_attempts: int = 8
    payout_confirm_poll_seconds: float = 2.0
    # Policy: which channels may fall back to which one when the original instrument is dead.
    payout_fallback_channel: str | None = "bank_transfer"
    payout_fallback_from: list[str] = ["card"]
    # Platform source -> the merchant's settlement currency, e.g. {"shop-us": "USD"}.
    payout_settlement_currency: dict[str, str] = {}
    payout_reversal_window_seconds: float = 3 * 24 * 3600
    payout_reversal_poll_seconds: float = 2.0
    # Payments on gateway "stripe" go to the Stripe Refunds API when a key is set (else the simulator).
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None  # e.g. a stripe-mock at http://127.0.0.1:12111
    sim_decline_percent: int = 2
    sim_latency_ms: int = 0
    # Shares of payments (percent, fixed per payment) with each fault; tokens in payment ids force them.
    sim_transient_percent: int = 0
    sim_timeout_percent: int = 0
    sim_async_percent: int = 0
    sim_reverse_percent: int = 0
    sim_confirm_after_seconds: float = 2.0
    sim_reverse_after_seconds: float = 2.0
    # Fault injection (tests only): SIGKILL after the gateway answered for this payment id.
    payout_fault_kill_after_gateway_for: str | None = None


settings = PayoutSettings()
policy = PayoutPolicy(
    retry=RetryPolicy(settings.payout_retry_base_seconds, settings.payout_retry_cap_seconds,
                      settings.payout_retry_max_attempts),
    confirm_poll_seconds=settings.payout_confirm_poll_seconds,
    fallback_channel=settings.payout_fallback_channel,
    fallback_from=frozenset(settings.payout_fallback_from),
    settlement_currency=settings.payout_settlement_currency,
    kill_after_gateway_for=settings.payout_fault_kill_after_gateway_for,
)
broker = make_broker(settings)
stage = Stage(schema="payout", source=SOURCE, decide=IntentRecorder(policy))
subscribe_stage(broker, stage, topics.APPROVED, group_id="refund-payout", max_records=settings.batch_max_records)


def _gateways() -> dict[str, Gateway]:
    faults = SimFaults(decline_percent=settings.sim_decline_percent, latency_ms=settings.sim_latency_ms,
                       transient_percent=settings.sim_transient_percent, timeout_percent=settings.sim_timeout_percent,
                       async_percent=settings.sim_async_percent, reverse_percent=settings.sim_reverse_percent,
                       confirm_after=timedelta(seconds=settings.sim_confirm_after_seconds),
                       reverse_after=timedelta(seconds=settings.sim_reverse_after_seconds))
    gateways: dict[str, Gateway] = {
        "sim": SimGatewayAdapter(SimGateway(stage.pool, faults), settings.payout_gateway_timeout_seconds)}
    if settings.stripe_api_key:
        gateways["stripe"] = StripeGatewayAdapter(settings.stripe_api_key, api_base=settings.stripe_api_base,
                                                  timeout_seconds=settings.payout_gateway_timeout_seconds)
    return gateways


async def run_gateways() -> None:
    """The executor and the reversal watcher, sharing one set of gateway clients."""
    await apply_migrations(settings.database_url, SIM_SCHEMA, SIM_MIGRATIONS, stage_tables=False)
    gateways = _gateways()
    executor = PayoutExecutor(stage, gateways, reclaim_after_seconds=settings.payout_reclaim_after_seconds,
                              sla_seconds=settings.payout_sla_seconds, policy=policy)
    watcher = ReversalWatcher(stage, gateways, window=timedelta(seconds=settings.payout_reversal_window_seconds),
                              interval_seconds=settings.payout_reversal_poll_seconds)
    await asyncio.gather(executor.run_forever(), watcher.run_forever())


BACKLOG = backlog_query("payout.payouts", since="created_at",
                        open_rows="status IN ('pending', 'submitting', 'confirming')")


async def sweep_backlog() -> None:
    await sweep_forever("payout", lambda: read_backlog(stage.pool, BACKLOG, settings.payout_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[run_gateways, sweep_backlog], title="Refund payout")
