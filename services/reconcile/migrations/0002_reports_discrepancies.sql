-- Settlement report files (uploaded, or pulled from the simulator), idempotent by content hash.
CREATE TABLE reconcile.settlement_reports (
    id            bigserial PRIMARY KEY,
    gateway       text NOT NULL,
    format        text NOT NULL,
    sha256        text NOT NULL UNIQUE,
    received_from text NOT NULL,
    rows_total    int NOT NULL,
    lines_new     int NOT NULL,
    lines_known   int NOT NULL,
    ignored       jsonb NOT NULL,
    errors        jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);

-- Lines are identified by the gateway's own transaction id; the same id again is the same line.
ALTER TABLE reconcile.settlement_lines DROP CONSTRAINT settlement_lines_pkey;
ALTER TABLE reconcile.settlement_lines
    ALTER COLUMN line_id DROP NOT NULL,
    ADD COLUMN id        bigserial PRIMARY KEY,
    ADD COLUMN txn_id    text,
    ADD COLUMN report_id bigint REFERENCES reconcile.settlement_reports (id),
    ADD COLUMN line_no   int,
    ADD COLUMN kind      text NOT NULL DEFAULT 'refund' CHECK (kind IN ('refund', 'refund_reversal')),
    ADD COLUMN state     text NOT NULL DEFAULT 'unmatched'
        CHECK (state IN ('unmatched', 'matched', 'discrepancy', 'reversed'));
CREATE UNIQUE INDEX settlement_lines_txn ON reconcile.settlement_lines (gateway, txn_id);
CREATE INDEX settlement_lines_unmatched ON reconcile.settlement_lines (id) WHERE state = 'unmatched';

ALTER TABLE reconcile.payouts DROP CONSTRAINT payouts_state_check;
ALTER TABLE reconcile.payouts ADD CONSTRAINT payouts_state_check
    CHECK (state IN ('awaiting', 'matched', 'discrepancy', 'resolved'));

-- The discrepancy queue: one row per problem, open until the data or finance closes it.
CREATE TABLE reconcile.discrepancies (
    id                bigserial PRIMARY KEY,
    category          text NOT NULL CHECK (category IN ('missing_in_report', 'missing_internally',
                          'amount_mismatch', 'currency_mismatch', 'duplicate', 'reversed')),
    refund_id         text,
    gateway_ref       text NOT NULL,
    line_id           bigint REFERENCES reconcile.settlement_lines (id),
    expected_value    bigint,
    expected_currency text,
    settled_value     bigint,
    settled_currency  text,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'auto_resolved', 'resolved')),
    opened_at         timestamptz NOT NULL DEFAULT now(),
    closed_at         timestamptz,
    resolved_by       text,
    resolution        text
);
CREATE UNIQUE INDEX discrepancies_one_open
    ON reconcile.discrepancies (category, gateway_ref, coalesce(line_id, 0)) WHERE status = 'open';
CREATE INDEX discrepancies_open ON reconcile.discrepancies (opened_at) WHERE status = 'open';

CREATE TABLE reconcile.discrepancy_audit (
    id             bigserial PRIMARY KEY,
    discrepancy_id bigint NOT NULL REFERENCES reconcile.discrepancies (id),
    actor          text NOT NULL,
    action         text NOT NULL,
    reason         text,
    at             timestamptz NOT NULL DEFAULT now()
);
