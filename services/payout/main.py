"""Payout process: `uvicorn services.payout.main:app`."""

from pathlib import Path


from services.payout.adyen_gateway import AdyenGatewayAdapter
from services.payout.api import gateway_events_router, payouts_router
from services.payout.exits import PayoutExits, sweep_failed
from services.payout.domain import RetryPolicy
from services.payout.gateway import Gateway
from services.payout.handlers import SOURCE, HandOff, IntentRecorder, PayoutExecutor, PayoutPolicy
from services.payout.outcomes import OutcomeRules
from services.payout.settings import PayoutSettings
from services.payout.stripe_gateway import StripeGatewayAdapter
from services.payout.webhooks import GatewayEventReceiver
from shared.contract import contact_seal, topics
from shared.contract.events import TYPE_OF, DestinationProvided, RefundApproved, RefundReinstated, \
    ReinstatementRefused
from shared.runtime.gateway_routes import GatewayRoute
from shared.runtime.metrics import backlog_query, read_backlog, sweep_forever
from shared.runtime.periodic import every
from shared.runtime.service import make_app, make_broker, subscribe_stage
from shared.runtime.staff import StaffAuth, StaffVerifier
from shared.runtime.stage import Handler, Stage


def adapter(name: str, route: GatewayRoute) -> Gateway:
    return {"stripe": StripeGatewayAdapter, "adyen": AdyenGatewayAdapter}[route.kind](name, route)


settings = PayoutSettings()
EXECUTOR_CONCURRENCY = 32  # gateway calls per executor round: the most rows one claim takes
try:
    destination_key = contact_seal.private_key(settings.destination_private_key)
except ValueError as error:
    raise SystemExit(f"payout cannot start: DESTINATION_PRIVATE_KEY is not an X25519 private key: {error}") from None
policy = PayoutPolicy(
    retry=RetryPolicy(settings.payout_retry_base_seconds, settings.payout_retry_cap_seconds,
                      settings.payout_retry_max_attempts),
    webhook_grace_seconds=settings.payout_webhook_grace_seconds,
    fallback_channel=settings.payout_fallback_channel,
    fallback_from=frozenset(settings.payout_fallback_from),
    settlement_currency=settings.payout_settlement_currency,
    kill_after_gateway_for=settings.payout_fault_kill_after_gateway_for,
    destination_key=destination_key,
)
broker = make_broker(settings)
gateways = {name: adapter(name, route) for name, route in settings.gateway_routes.items()}
exits = PayoutExits(gateways, destination_key)
# Intents the consume step records are claimed for this process and handed to its executor in memory.
hand_off = HandOff(settings.payout_reclaim_after_seconds, EXECUTOR_CONCURRENCY)
stage = Stage(schema="payout", source=SOURCE, handlers={
    TYPE_OF[RefundApproved]: Handler(IntentRecorder(policy, hand_off)),
    # Exits out of a failed payout: intake's answers, and customers' new destinations (services/payout/exits.py).
    TYPE_OF[RefundReinstated]: Handler(exits.on_answers),
    TYPE_OF[ReinstatementRefused]: Handler(exits.on_answers),
    TYPE_OF[DestinationProvided]: Handler(exits.on_destinations),
}, on_commit=hand_off.committed, on_rollback=hand_off.rolled_back)
consumer = subscribe_stage(stage, topics.APPROVED, topics.REINSTATED, topics.DESTINATIONS, group_id="refund-payout",
                           max_records=settings.batch_max_records)
receiver = GatewayEventReceiver(stage, OutcomeRules(policy), sla_seconds=settings.payout_sla_seconds)


async def run_executor() -> None:
    executor = PayoutExecutor(stage, gateways, reclaim_after_seconds=settings.payout_reclaim_after_seconds,
                              sla_seconds=settings.payout_sla_seconds, policy=policy,
                              concurrency=EXECUTOR_CONCURRENCY, rounds=settings.payout_executor_rounds,
                              hand_off=hand_off)
    await executor.run_forever()


BACKLOG = backlog_query("payout.payouts", since="created_at",
                        open_rows="status IN ('pending', 'submitting', 'confirming')")


async def sweep_backlog() -> None:
    await sweep_forever("payout", lambda: read_backlog(stage.pool, BACKLOG, settings.payout_sla_seconds),
                        settings.sweep_interval_seconds)


async def sweep_exits() -> None:
    await every(settings.sweep_interval_seconds, lambda: sweep_failed(stage.pool), name="payout_failed_sweep")


app = make_app(settings, broker=broker, stage=stage, consumers=[consumer],
               migrations=Path(__file__).parent / "migrations",
               background=[run_executor, sweep_backlog, sweep_exits],
               closers=[gateway.close for gateway in gateways.values()], title="Refund payout")
app.include_router(gateway_events_router(gateways, receiver))
app.include_router(payouts_router(stage, exits, StaffAuth(StaffVerifier.from_settings(settings)), gateways))
