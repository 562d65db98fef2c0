-- Intake owns the ticket, the dedupe record and the refundable balance per payment.

-- One row per (source, request_id) forever; the outcome event is kept so a
-- re-sent request gets the very same answer again.
CREATE TABLE intake.tickets (
    refund_id      text PRIMARY KEY,
    source         text NOT NULL,
    request_id     text NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    payment_key    text,
    amount_value   bigint,
    currency       text,
    channel        text,
    region         text,
    outcome_topic  text NOT NULL,
    outcome_key    text,
    outcome_value  bytea NOT NULL,
    outcome_headers jsonb NOT NULL,
    received_at    timestamptz NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, request_id)
);

-- Invariant 2: accepted refunds never exceed what was captured on the payment.
CREATE TABLE intake.payment_balances (
    gateway    text NOT NULL,
    payment_id text NOT NULL,
    currency   text NOT NULL,
    captured   bigint NOT NULL CHECK (captured >= 0),
    refunded   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (gateway, payment_id),
    CHECK (refunded >= 0 AND refunded <= captured)
);
