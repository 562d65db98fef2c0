-- Paid refunds waiting for their settlement line, and the lines as reported.
CREATE TABLE reconcile.payouts (
    refund_id    text PRIMARY KEY,
    gateway      text NOT NULL,
    gateway_ref  text NOT NULL UNIQUE,
    amount_value bigint NOT NULL,
    currency     text NOT NULL,
    channel      text NOT NULL,
    refund       jsonb NOT NULL,
    state        text NOT NULL DEFAULT 'awaiting' CHECK (state IN ('awaiting', 'matched', 'discrepancy')),
    category     text,
    paid_at      timestamptz NOT NULL,
    settled_at   timestamptz
);
CREATE INDEX payouts_awaiting ON reconcile.payouts (paid_at) WHERE state = 'awaiting';

CREATE TABLE reconcile.settlement_lines (
    gateway      text NOT NULL,
    line_id      bigint NOT NULL,
    gateway_ref  text NOT NULL,
    amount_value bigint NOT NULL,
    currency     text NOT NULL,
    fee_value    bigint NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, line_id)
);
CREATE INDEX settlement_lines_ref ON reconcile.settlement_lines (gateway_ref);

-- How far each gateway's settlement report has been read.
CREATE TABLE reconcile.report_cursors (
    gateway      text PRIMARY KEY,
    last_line_id bigint NOT NULL
);
