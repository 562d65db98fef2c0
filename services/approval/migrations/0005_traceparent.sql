-- The trace a parked decision came in (shared/tracing.py `traceparent_for`), so the verifier's gateway
-- read and the events it publishes continue it (`resume`). NULL: untraced, or parked before this column.
ALTER TABLE approval.verifications ADD COLUMN traceparent text;
