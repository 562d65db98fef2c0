-- Payment verification: an approval goes out only after its payment was read at its gateway.

-- Approvals waiting for that read, one per refund. The consumer and the review API only write a row
-- here; the verifier (services/approval/verification.py) claims due rows, reads the gateways, and
-- then publishes the approval, opens a `payment-mismatch` hold, or asks again later.
CREATE TABLE approval.verifications (
    refund_id      text PRIMARY KEY,
    refund         jsonb NOT NULL,             -- the accepted refund, carried on to the decision event
    gateway        text NOT NULL,
    payment_id     text NOT NULL,
    policy_version text NOT NULL,
    reason_codes   text[] NOT NULL,            -- the approval's, published once verified
    decided_by     text NOT NULL,              -- 'policy', a reviewer, or 'system' (expiry)
    sla_seconds    double precision,           -- the automatic decision's SLA; NULL for people's decisions
    acknowledged   text[] NOT NULL DEFAULT '{}', -- mismatch codes a person released; they no longer hold it
    on_mismatch    text NOT NULL CHECK (on_mismatch IN ('hold', 'deny')),
    attempts       int NOT NULL DEFAULT 0,     -- reads the gateway did not answer
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    next_check_at  timestamptz NOT NULL DEFAULT now(),
    claim          uuid                        -- the verifier round that holds the row until next_check_at
);
CREATE INDEX verifications_due ON approval.verifications (next_check_at);

-- A hold opened because the gateway's payment disagreed with an approval: releasing it approves with
-- these reason codes (the policy or the reviewers had already decided). NULL for risk holds, whose
-- release lets the policy decide.
ALTER TABLE approval.reviews ADD COLUMN release_codes text[];
