-- The status projection: one row per refund, monotonic, with every stage's timestamp.
CREATE TABLE notify.refund_status (
    refund_id    text PRIMARY KEY,
    request_id   text,
    source       text,
    order_id     text,
    status       text NOT NULL,
    amount       jsonb,
    channel      text,
    reason_codes text[] NOT NULL DEFAULT '{}',
    eta          timestamptz,
    timeline     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL
);
CREATE INDEX refund_status_status ON notify.refund_status (status);
