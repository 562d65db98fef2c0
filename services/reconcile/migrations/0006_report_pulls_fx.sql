-- Settlement reports pulled from each configured gateway's API (GATEWAY_ROUTES): one opaque
-- cursor per gateway, written in the transaction that ingests the file it was read from.
-- `kind` is the route's kind the position belongs to (stripe: the last report run's interval_end;
-- adyen: the last settlement batch downloaded); a position of another kind is not used.
-- 0001's report_cursors (the in-process simulator's line ids) is no longer read.
CREATE TABLE reconcile.report_pull_cursors (
    gateway  text PRIMARY KEY,
    kind     text NOT NULL CHECK (kind IN ('stripe', 'adyen')),
    position text NOT NULL,
    files    bigint NOT NULL DEFAULT 0,
    moved_at timestamptz NOT NULL DEFAULT now()
);

-- A cross-currency refund line matched within RECONCILE_FX_TOLERANCE_BPS of what payout expected:
-- settled minus expected, in minor units of the settlement currency (0 for every other line).
ALTER TABLE reconcile.settlement_lines ADD COLUMN fx_difference bigint NOT NULL DEFAULT 0;
