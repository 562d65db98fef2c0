-- Manual review, risk holds, the customer history risk rules read, disputes, and the audit trail.

-- One row per refund that people must decide: a risk hold, or a review the policy asked for.
-- A released hold that the policy then sends to review becomes kind 'review' on the same row.
CREATE TABLE approval.reviews (
    refund_id          text PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('review', 'hold')),
    state              text NOT NULL CHECK (state IN ('open', 'approved', 'denied')),
    required_approvals int  NOT NULL DEFAULT 1 CHECK (required_approvals BETWEEN 1 AND 2),
    roles              text[] NOT NULL,
    rule_ids           text[] NOT NULL,
    policy_version     text NOT NULL,
    refund             jsonb NOT NULL,       -- the accepted refund, carried on to the decision event
    amount_value       bigint NOT NULL,
    currency           text NOT NULL,
    channel            text NOT NULL,
    region             text NOT NULL,
    opened_at          timestamptz NOT NULL DEFAULT now(),
    due_at             timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    escalated_at       timestamptz,
    closed_at          timestamptz
);
CREATE INDEX reviews_open ON approval.reviews (due_at) WHERE state = 'open';

-- Approvals given so far for the current kind (four eyes: two distinct users).
CREATE TABLE approval.review_approvals (
    refund_id   text NOT NULL REFERENCES approval.reviews,
    kind        text NOT NULL,
    user_id     text NOT NULL,
    approved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, kind, user_id)
);

-- Append-only: who decided what, when and why. Updates and deletes are refused by the trigger.
CREATE TABLE approval.audit (
    id         bigserial PRIMARY KEY,
    refund_id  text NOT NULL,
    actor      text NOT NULL,           -- a staff user id, or 'system' for expiry and escalation
    roles      text[] NOT NULL DEFAULT '{}',
    action     text NOT NULL,
    reason     text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_refund ON approval.audit (refund_id, id);

CREATE FUNCTION approval.audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval.audit is append-only';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON approval.audit
    FOR EACH ROW EXECUTE FUNCTION approval.audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON approval.audit
    FOR EACH STATEMENT EXECUTE FUNCTION approval.audit_is_append_only();

-- Every accepted refund, for the velocity and amount-history risk rules.
CREATE TABLE approval.customer_refunds (
    refund_id    text PRIMARY KEY,
    customer_key text NOT NULL,          -- source + '/' + customer.id: customer ids are per platform
    currency     text NOT NULL,
    amount_value bigint NOT NULL,
    accepted_at  timestamptz NOT NULL
);
CREATE INDEX customer_refunds_by_customer ON approval.customer_refunds (customer_key, accepted_at);

-- Open disputes/chargebacks per payment, flagged by finance; refunds on them are held.
CREATE TABLE approval.disputes (
    gateway    text NOT NULL,
    payment_id text NOT NULL,
    open       boolean NOT NULL,
    reason     text NOT NULL,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, payment_id)
);

ALTER TABLE approval.decisions ADD COLUMN decided_by text NOT NULL DEFAULT 'policy';
