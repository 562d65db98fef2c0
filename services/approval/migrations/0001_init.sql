-- One decision per refund, with the policy version and the rules that fired.
CREATE TABLE approval.decisions (
    refund_id      text PRIMARY KEY,
    decision       text NOT NULL CHECK (decision IN ('approved', 'denied')),
    policy_version text NOT NULL,
    rule_ids       text[] NOT NULL,
    channel        text NOT NULL,
    accepted_at    timestamptz NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now()
);
