-- One payout per refund (invariant 1). The row is the intent, written before the
-- gateway is called; `submitting` rows a crash left behind are re-claimed and the
-- gateway is asked again under the same idempotency key.
CREATE TABLE payout.payouts (
    refund_id       text PRIMARY KEY,
    payout_id       text NOT NULL UNIQUE,
    idempotency_key text NOT NULL UNIQUE,
    status          text NOT NULL CHECK (status IN ('pending', 'submitting', 'succeeded', 'failed')),
    gateway         text NOT NULL,
    payment_id      text NOT NULL,
    amount_value    bigint NOT NULL CHECK (amount_value > 0),
    currency        text NOT NULL,
    channel         text NOT NULL,
    refund          jsonb NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    gateway_ref     text,
    failure_reason  text,
    approved_at     timestamptz NOT NULL,
    claimed_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX payouts_open ON payout.payouts (created_at) WHERE status IN ('pending', 'submitting');
