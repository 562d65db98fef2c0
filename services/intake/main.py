"""Intake process: `uvicorn services.intake.main:app`."""

from pathlib import Path

from services.intake import handlers
from shared import topics
from shared.service import make_app, make_broker, subscribe_stage
from shared.settings import ServiceSettings
from shared.stage import Stage


class IntakeSettings(ServiceSettings):
    service_name: str = "intake"


settings = IntakeSettings()
broker = make_broker(settings)
stage = Stage(schema="intake", source=handlers.SOURCE, decide=handlers.decide, accept_invalid_envelopes=True)
subscribe_stage(broker, stage, topics.REQUESTED, group_id="refund-intake", max_records=settings.batch_max_records)
app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               title="Refund intake")
