"""Approval process: `uvicorn services.approval.main:app`."""

import sys
from pathlib import Path

from pydantic import Field

from services.approval.api import review_router
from services.approval.handlers import SOURCE, ApprovalStep, Decisions, ReviewDesk
from services.approval.payments import GatewayPayments
from services.approval.policy import PolicyError, load_policy
from services.approval.store import BACKLOG
from services.approval.verification import PaymentVerifier
from shared.contract import topics
from shared.contract.events import TYPE_OF, RefundAccepted
from shared.runtime.gateway_routes import GatewayRoutes
from shared.runtime.metrics import read_backlog, sweep_forever
from shared.runtime.periodic import every
from shared.runtime.service import make_app, make_broker, subscribe_stage
from shared.runtime.settings import ServiceSettings
from shared.runtime.stage import Handler, Stage
from shared.runtime.staff import StaffAuth, StaffVerifier

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy" / "refund-policy.yaml"


class ApprovalSettings(ServiceSettings):
    service_name: str = "approval"
    approval_policy_file: Path = DEFAULT_POLICY
    # Automatic decisions; a manual review's clock is the policy's review.sla.
    approval_sla_seconds: float = 60.0
    review_clock_interval_seconds: float = 5.0
    # GATEWAY_ROUTES (JSON, shared/runtime/gateway_routes.py), the same routes payout pays through: approval reads
    # each refund's payment there before approving it. A gateway without a route is not verified (payout
    # fails its refunds `gateway_not_configured`).
    gateway_routes: GatewayRoutes = {}
    # A gateway that does not answer a payment read is asked again after base, 2x base, ... up to cap seconds.
    approval_verify_retry_base_seconds: float = Field(1.0, gt=0)
    approval_verify_retry_cap_seconds: float = Field(60.0, gt=0)
    # Payment reads in flight per verifier round; a round's rows are held for the lease (longer than a read's
    # timeout, the route's `timeout_seconds`): a crashed replica's rows are read again after it.
    approval_verify_concurrency: int = Field(32, ge=1)
    # Verifier rounds in flight per gateway (each claims its own rows): while one waits on its slowest
    # read, the others claim and read (as payout's executor rounds do).
    approval_verify_rounds: int = Field(4, ge=1)
    approval_verify_lease_seconds: float = Field(30.0, gt=0)


settings = ApprovalSettings()
try:
    policy = load_policy(settings.approval_policy_file)
except PolicyError as invalid:
    sys.exit(f"approval cannot start: {invalid}")

broker = make_broker(settings)
payments = GatewayPayments.from_routes(settings.gateway_routes)
decisions = Decisions(policy, payments, hand_off_lease=settings.approval_verify_lease_seconds)
stage = Stage(schema="approval", source=SOURCE,
              handlers={TYPE_OF[RefundAccepted]: Handler(ApprovalStep(decisions, settings.approval_sla_seconds))},
              on_commit=decisions.hand_over, on_rollback=decisions.drop_handing)
consumer = subscribe_stage(stage, topics.ACCEPTED, group_id="refund-approval", max_records=settings.batch_max_records)
desk = ReviewDesk(stage, decisions)
verifier = PaymentVerifier(stage, decisions, payments, claim_size=settings.approval_verify_concurrency,
                           lease_seconds=settings.approval_verify_lease_seconds,
                           retry_base_seconds=settings.approval_verify_retry_base_seconds,
                           retry_cap_seconds=settings.approval_verify_retry_cap_seconds,
                           rounds_per_gateway=settings.approval_verify_rounds)


async def review_clock() -> None:
    await every(settings.review_clock_interval_seconds, desk.tick, name="review_clock")


async def count_parked() -> None:
    await every(settings.sweep_interval_seconds, desk.count_parked, name="parked_reviews")


async def sweep_backlog() -> None:
    await sweep_forever("approval", lambda: read_backlog(stage.pool, BACKLOG, settings.approval_sla_seconds),
                        settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, consumers=[consumer],
               migrations=Path(__file__).parent / "migrations",
               background=[review_clock, count_parked, sweep_backlog, verifier.run_forever], closers=[payments.close],
               title="Refund approval")
app.include_router(review_router(desk, StaffAuth(StaffVerifier.from_settings(settings))))
