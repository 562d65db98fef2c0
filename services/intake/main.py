"""Intake process: `uvicorn services.intake.main:app`."""

from pathlib import Path

from services.intake import api
from services.intake.handlers import SOURCE, Intake
from services.intake.settings import IntakeSettings
from shared import sla, topics
from shared.service import make_app, make_broker, subscribe_stage
from shared.stage import Stage

settings = IntakeSettings()
try:
    sla_table = sla.load(settings.sla_file)
except sla.SlaFileError as error:
    raise SystemExit(f"intake cannot start: bad SLA file (SLA_FILE): {error}") from None

intake = Intake(sla_table)
broker = make_broker(settings)
stage = Stage(schema="intake", source=SOURCE, decide=intake.decide, accept_invalid_envelopes=True)
subscribe_stage(broker, stage, topics.REQUESTED, group_id="refund-intake", max_records=settings.batch_max_records)
app = make_app(settings, broker=broker, stage=stage, migrations=Path(__file__).parent / "migrations",
               title="Refund intake")
app.include_router(api.refunds_router(intake, stage))
api.publish_request_schema(app)
