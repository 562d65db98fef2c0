"""Intake process: `uvicorn services.intake.main:app`."""

from pathlib import Path

from services.intake import api, reinstate, release, sla, store
from services.intake.domain import DrillPayment
from services.intake.drill import drill_forever
from services.intake.handlers import SOURCE, Intake
from services.intake.settings import IntakeSettings
from shared.contract import contact_seal, topics
from shared.runtime.http_limits import RateLimit
from shared.runtime.metrics import read_backlog, sweep_forever
from shared.runtime.service import make_app, make_broker, subscribe_stage
from shared.runtime.stage import Handler, Stage

settings = IntakeSettings()
try:
    sla_table = sla.load(settings.sla_file)
except sla.SlaFileError as error:
    raise SystemExit(f"intake cannot start: bad SLA file (SLA_FILE): {error}") from None

sla.export_sla(sla_table)
try:
    contact_key = contact_seal.public_key(settings.contact_public_key)
except ValueError as error:
    raise SystemExit(f"intake cannot start: CONTACT_PUBLIC_KEY is not an X25519 public key: {error}") from None
intake = Intake(sla_table, contact_key, drill_sources=settings.drill_sources)
broker = make_broker(settings)
# One step for every event, whatever its type, answering by topic: on refunds.requested each gets an
# outcome (one that is not a request, or of a type outside the contract, is rejected naming `type`); on the
# release topics only the ending events act, on refunds.payout-exits the exits (services/intake/reinstate.py).
# Raw data (validated=False): intake rejects an invalid request
# naming every field error itself.
stage = Stage(schema="intake", source=SOURCE, default=Handler(intake.decide_batch, validated=False),
              on_invalid_envelope=intake.answer_invalid_envelope,
              answers_invalid_envelopes_on=frozenset({topics.REQUESTED}))
# One group for requests and the events that end a refund: a group that first subscribes to the latter
# starts at their earliest retained offset, so refunds ended before intake consumed them are released too.
consumer = subscribe_stage(stage, topics.REQUESTED, *release.TOPICS, *reinstate.TOPICS, group_id="refund-intake",
                           max_records=settings.batch_max_records)


async def sweep_backlog() -> None:
    await sweep_forever("intake", lambda: read_backlog(stage.pool, store.BACKLOG), settings.sweep_interval_seconds)


async def drills() -> None:
    if settings.drill_interval_seconds > 0:
        payment = DrillPayment(settings.drill_payment_gateway, settings.drill_payment_id,
                               settings.drill_payment_captured_value)
        await drill_forever(stage, settings.drill_interval_seconds, settings.drill_off_peak_hours_utc, payment)


app = make_app(settings, broker=broker, stage=stage, consumers=[consumer],
               migrations=Path(__file__).parent / "migrations",
               background=[sweep_backlog, drills], title="Refund intake")
app.include_router(api.refunds_router(
    intake, stage, RateLimit("intake_refunds_per_key", settings.intake_rate_limit, settings.rate_limit_storage_uri)))
api.publish_request_schema(app)
