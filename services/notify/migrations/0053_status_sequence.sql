-- Every record notify publishes on refunds.status carries the row's sequence, one more than the
-- last one it published for that refund, so a consumer can drop a republished older snapshot.
ALTER TABLE notify.refund_status ADD COLUMN sequence bigint NOT NULL DEFAULT 0;
