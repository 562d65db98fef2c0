-- The simulator as an HTTP gateway (docs/gateway-simulator.md): every record
-- belongs to an account (the first URL segment, the pipeline's gateway name).
-- Rows written by the in-process SimGateway belong to account 'sim'.

-- A key is unique within its account only.
ALTER TABLE gateway_sim.refunds ADD COLUMN account text NOT NULL DEFAULT 'sim';
ALTER TABLE gateway_sim.refunds DROP CONSTRAINT refunds_pkey;
ALTER TABLE gateway_sim.refunds ADD PRIMARY KEY (account, idempotency_key);
ALTER TABLE gateway_sim.refunds
    -- List order (newest first) and the cursor of Stripe's starting_after.
    ADD COLUMN seq         bigserial,
    -- Which API made it; NULL for the in-process simulator, which sends no webhooks.
    ADD COLUMN personality text CHECK (personality IN ('stripe', 'adyen')),
    ADD COLUMN channel     text NOT NULL DEFAULT 'card',
    -- The gateway's fee (sim-fee), in the settlement currency, for the refund's settlement line.
    ADD COLUMN fee_value   bigint NOT NULL DEFAULT 0,
    -- Stripe: the metadata[...] of the create call; Adyen: merchantAccount and reference.
    ADD COLUMN metadata    jsonb NOT NULL DEFAULT '{}';
CREATE INDEX refunds_by_payment ON gateway_sim.refunds (account, payment_id, seq DESC);

ALTER TABLE gateway_sim.rejected_calls ADD COLUMN account text NOT NULL DEFAULT 'sim';
ALTER TABLE gateway_sim.rejected_calls DROP CONSTRAINT rejected_calls_pkey;
ALTER TABLE gateway_sim.rejected_calls ADD PRIMARY KEY (account, idempotency_key);

-- created_at names the time reports select lines by; it is settled_at (one clock, two names).
ALTER TABLE gateway_sim.settlement_lines
    ADD COLUMN account    text NOT NULL DEFAULT 'sim',
    ADD COLUMN created_at timestamptz GENERATED ALWAYS AS (settled_at) STORED,
    -- Adyen-shaped accounts: the settlement batch (report file) the line was closed into.
    ADD COLUMN batch      int;
CREATE INDEX settlement_lines_by_time ON gateway_sim.settlement_lines (account, created_at);
CREATE INDEX settlement_lines_by_batch ON gateway_sim.settlement_lines (account, batch);

-- Payments exist before they are refunded or verified, as at a real gateway.
CREATE TABLE gateway_sim.payments (
    account      text NOT NULL,
    id           text NOT NULL,
    charge_id    text NOT NULL,
    amount_value bigint NOT NULL CHECK (amount_value > 0),
    currency     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, id),
    UNIQUE (account, charge_id)
);

-- Stripe idempotency: the first request's fingerprint and, once it finished
-- with a non-5xx answer, that answer (replayed byte for byte).
CREATE TABLE gateway_sim.idempotency_keys (
    account     text NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    status_code int,  -- NULL while the first request is in flight
    body        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, key)
);

-- Webhooks, written in the transaction of the change they announce, sent until a 2xx.
CREATE TABLE gateway_sim.webhook_outbox (
    id              bigserial PRIMARY KEY,
    account         text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    body            text NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz DEFAULT now(),  -- NULL: delivered, or given up after the last attempt
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account, event_id)
);
CREATE INDEX webhook_outbox_due ON gateway_sim.webhook_outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Stripe Reports API: a run's file is rendered once, when the run is created.
CREATE TABLE gateway_sim.report_runs (
    account        text NOT NULL,
    id             text NOT NULL,
    file_id        text NOT NULL UNIQUE,
    report_type    text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    content        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, id)
);

-- Adyen settlement batches, numbered per account from 1.
CREATE TABLE gateway_sim.settlement_batches (
    account   text NOT NULL,
    batch     int NOT NULL,
    lines     int NOT NULL,
    closed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, batch)
);
