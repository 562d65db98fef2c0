-- The latest payout attempt applied to each refund (nothing of an older attempt moves its status; a
-- newer one re-drives a failed refund), and its history: every status and timeline-only event in the
-- order folded, since a re-driven refund is `processing` twice and `timeline` keeps one time per status.
ALTER TABLE notify.refund_status
    ADD COLUMN payout_attempt int NOT NULL DEFAULT 0,
    ADD COLUMN history jsonb NOT NULL DEFAULT '[]';

-- Every refund that saw a payout before attempts existed saw attempt 1.
UPDATE notify.refund_status SET payout_attempt = 1
WHERE timeline ?| ARRAY['processing', 'succeeded', 'failed', 'reversed', 'discrepancy', 'reconciled'];

-- A milestone can come again with a new payout attempt (payment failed, re-driven, failed again):
-- one notification per (refund, milestone, channel, attempt).
ALTER TABLE notify.notifications ADD COLUMN attempt int NOT NULL DEFAULT 1;
ALTER TABLE notify.notifications DROP CONSTRAINT notifications_refund_id_milestone_channel_key;
ALTER TABLE notify.notifications ADD CONSTRAINT notifications_once UNIQUE (refund_id, milestone, channel, attempt);

-- The console finds tickets by refund id (the key), request id, order id or customer id.
CREATE INDEX refund_status_request_id ON notify.refund_status (request_id);
CREATE INDEX refund_status_order_id ON notify.refund_status (order_id);
CREATE INDEX refund_status_customer_id ON notify.refund_status ((customer ->> 'id'));
