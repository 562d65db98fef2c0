"""Approval process: `uvicorn services.approval.main:app`."""

import sys
from pathlib import Path

from services.approval.api import review_router
from services.approval.handlers import SOURCE, ApprovalStep, ReviewDesk
from services.approval.policy import PolicyError, load_policy
from services.approval.store import BACKLOG
from shared import topics
from shared.metrics import read_backlog, sweep_forever
from shared.periodic import every
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage
from shared.staff import StaffAuth, StaffVerifier

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy" / "refund-policy.yaml"


class ApprovalSettings(ServiceSettings):
    service_name: str = "approval"
    approval_policy_file: Path = DEFAULT_POLICY
    # Automatic decisions; a manual review's clock is the policy's review.sla.
    approval_sla_seconds: float = 60.0
    review_clock_interval_seconds: float = 5.0


settings = ApprovalSettings()
try:
    policy = load_policy(settings.approval_policy_file)
except PolicyError as invalid:
    sys.exit(f"approval cannot start: {invalid}")

broker = make_broker(settings)
stage = Stage(schema="approval", source=SOURCE, decide=ApprovalStep(policy, settings.approval_sla_seconds))
subscribe_stage(broker, stage, topics.ACCEPTED, group_id="refund-approval", max_records=settings.batch_max_records)
desk = ReviewDesk(stage, policy)


async def review_clock() -> None:
    await every(settings.review_clock_interval_seconds, desk.tick, name="review_clock")


async def sweep_backlog() -> None:
    await sweep_forever("approval", lambda: read_backlog(stage.pool, BACKLOG), settings.sweep_interval_seconds)


app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               background=[review_clock, sweep_backlog], title="Refund approval")
app.include_router(review_router(desk, StaffAuth(StaffVerifier.from_settings(settings))))
