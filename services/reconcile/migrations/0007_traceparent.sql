-- The trace the paid event came in (shared/tracing.py `traceparent_for`): the matcher's reconciled or
-- discrepancy event continues it. NULL: untraced, or recorded before this column.
ALTER TABLE reconcile.payouts ADD COLUMN traceparent text;
