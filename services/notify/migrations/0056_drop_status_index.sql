-- No query reads refund_status by status (the watch groups open rows by stage, the APIs look up by id,
-- request or order), and status changes with every event folded, so each update paid for this index too
-- (make bench: 4 updates per refund, none HOT, 27 buffers touched per row upserted).
DROP INDEX IF EXISTS notify.refund_status_status;
