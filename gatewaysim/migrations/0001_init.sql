CREATE TABLE gateway_sim.refunds (
    idempotency_key text PRIMARY KEY,
    gateway_ref     text NOT NULL UNIQUE,
    payment_id      text NOT NULL,
    amount_value    bigint NOT NULL,
    currency        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    failure_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The settlement report: one line per refund the gateway paid out.
CREATE TABLE gateway_sim.settlement_lines (
    id           bigserial PRIMARY KEY,
    gateway_ref  text NOT NULL,
    amount_value bigint NOT NULL,
    currency     text NOT NULL,
    fee_value    bigint NOT NULL DEFAULT 0,
    settled_at   timestamptz NOT NULL DEFAULT now()
);
