-- The trace the approval came in (its CloudEvent `traceparent`), so the executor's gateway call and the
-- events it publishes continue it (shared/tracing.py `resume`). NULL: untraced, or older than this column.
ALTER TABLE payout.payouts ADD COLUMN traceparent text;
