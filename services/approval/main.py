"""Approval process: `uvicorn services.approval.main:app`."""

from pathlib import Path

from services.approval.handlers import SOURCE, ApprovalStep
from shared import topics
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage


class ApprovalSettings(ServiceSettings):
    service_name: str = "approval"
    # Minor units of the refund's own currency; above it the skeleton policy denies.
    auto_approve_max_minor: int = 100_000_000
    approval_sla_seconds: float = 60.0


settings = ApprovalSettings()
broker = make_broker(settings)
stage = Stage(schema="approval", source=SOURCE,
              decide=ApprovalStep(settings.auto_approve_max_minor, settings.approval_sla_seconds))
subscribe_stage(broker, stage, topics.ACCEPTED, group_id="refund-approval", max_records=settings.batch_max_records)
app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               title="Refund approval")
