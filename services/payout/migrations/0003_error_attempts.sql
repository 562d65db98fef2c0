-- The retry budget counts failed attempts only: polling a refund the gateway still has
-- `pending` (which can last days) must not use it up.
ALTER TABLE payout.payouts ADD COLUMN error_attempts int NOT NULL DEFAULT 0;
