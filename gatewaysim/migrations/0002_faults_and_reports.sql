-- Faults a real gateway shows: late asynchronous confirmation (`pending`) and
-- reversal after success (`reversed`). The call counters let tests prove how
-- often a caller really hit the gateway and asked it by idempotency key.
ALTER TABLE gateway_sim.refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE gateway_sim.refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'reversed'));
ALTER TABLE gateway_sim.refunds
    ADD COLUMN refund_calls   int NOT NULL DEFAULT 1,
    ADD COLUMN lookups        int NOT NULL DEFAULT 0,
    ADD COLUMN confirm_at     timestamptz,
    ADD COLUMN reverse_at     timestamptz,
    ADD COLUMN reversed_at    timestamptz;

-- Calls that failed before the gateway recorded anything (5xx), per key.
CREATE TABLE gateway_sim.rejected_calls (
    idempotency_key text PRIMARY KEY,
    calls           int NOT NULL
);

-- A reversal is its own report line (Stripe: reporting_category refund_failure;
-- Adyen: RefundedReversed), with its own transaction id.
ALTER TABLE gateway_sim.settlement_lines
    ADD COLUMN kind text NOT NULL DEFAULT 'refund' CHECK (kind IN ('refund', 'refund_reversal'));

CREATE INDEX refunds_to_confirm ON gateway_sim.refunds (confirm_at) WHERE status = 'pending';
CREATE INDEX refunds_to_reverse ON gateway_sim.refunds (reverse_at) WHERE status = 'succeeded' AND reverse_at IS NOT NULL;
