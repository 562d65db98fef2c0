-- The ticket's per-stage due times (from refund.accepted.v1), carried on the status feed.
ALTER TABLE notify.refund_status ADD COLUMN deadlines jsonb;
