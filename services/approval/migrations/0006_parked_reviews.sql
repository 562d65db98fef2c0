-- A review or hold whose policy says `on_expiry: park` leaves the live queue as 'expired' at expiry: the
-- refund is still waiting in the approval stage (its status unchanged) until a senior reviewer reopens it
-- (back to 'open', new deadlines) -- a denial could never come back.
ALTER TABLE approval.reviews DROP CONSTRAINT reviews_state_check;
ALTER TABLE approval.reviews ADD CONSTRAINT reviews_state_check
    CHECK (state IN ('open', 'expired', 'approved', 'denied'));
ALTER TABLE approval.reviews ADD COLUMN expired_at timestamptz;   -- parked at; NULL once reopened
ALTER TABLE approval.reviews ADD COLUMN reopened_at timestamptz;  -- the latest reopening
ALTER TABLE approval.reviews ADD COLUMN reopened_by text;

-- The queue (GET /v1/reviews): one state, oldest first; waiting rows are few, decided ones pile up.
CREATE INDEX reviews_queue ON approval.reviews (state, opened_at, refund_id);
-- Its filters on waiting rows: a rule id among rule_ids, an amount range in one currency, kind/channel/region.
CREATE INDEX reviews_waiting_rules ON approval.reviews USING gin (rule_ids) WHERE state IN ('open', 'expired');
CREATE INDEX reviews_waiting_amount ON approval.reviews (currency, amount_value) WHERE state IN ('open', 'expired');
CREATE INDEX reviews_waiting_where ON approval.reviews (kind, channel, region, opened_at)
    WHERE state IN ('open', 'expired');
-- The clock's expiry scan (state 'open' past expires_at).
CREATE INDEX reviews_open_expiry ON approval.reviews (expires_at) WHERE state = 'open';
