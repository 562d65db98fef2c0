-- Exits out of a failed payout (new destination, re-route, paid outside the pipeline). A refund keeps one
-- current payout row, numbered by `attempt` (1 the approval's); an exit makes attempt n+1 on that same row
-- with a new payout id and a new idempotency key, after the failed attempt n is copied to payout_attempts.
-- Invariant 1 in SQL: one row per refund here, and only failed attempts are ever archived, so a refund has
-- at most one payout that succeeded.
ALTER TABLE payout.payouts
    ADD COLUMN attempt            int NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    ADD COLUMN paid_outside       boolean NOT NULL DEFAULT false,
    -- A customer's new destination, sealed for payout (shared/contract/contact_seal.py), opened only to pay.
    ADD COLUMN destination_sealed text,
    ADD COLUMN updated_at         timestamptz NOT NULL DEFAULT now();

CREATE TABLE payout.payout_attempts (
    refund_id       text NOT NULL REFERENCES payout.payouts (refund_id),
    attempt         int NOT NULL CHECK (attempt >= 1),
    payout_id       text NOT NULL UNIQUE,
    idempotency_key text NOT NULL,
    gateway         text NOT NULL,
    channel         text NOT NULL,
    status          text NOT NULL CHECK (status = 'failed'),
    gateway_ref     text,
    failure_reason  text,
    amount_value    bigint NOT NULL,
    currency        text NOT NULL,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, attempt)
);

-- Every exit asked for, with who asked and why: the audit trail of the way out.
CREATE TABLE payout.exits (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    refund_id           text NOT NULL REFERENCES payout.payouts (refund_id),
    attempt             int NOT NULL CHECK (attempt >= 2),  -- the attempt it makes (the failed one + 1)
    exit                text NOT NULL CHECK (exit IN ('new_destination', 'reroute', 'paid_outside')),
    state               text NOT NULL DEFAULT 'requested'
                        CHECK (state IN ('requested', 'reinstated', 'refused', 'done')),
    requested_by        text NOT NULL,
    reason              text NOT NULL,
    evidence            text,
    reference           text,
    gateway             text,
    destination_sealed  text,
    destination_summary text,
    refusal             jsonb,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    decided_at          timestamptz,
    CHECK (exit <> 'paid_outside' OR (reference IS NOT NULL AND evidence IS NOT NULL)),
    CHECK (exit <> 'reroute' OR gateway IS NOT NULL),
    CHECK (exit <> 'new_destination' OR destination_sealed IS NOT NULL)
);
-- At most one exit in flight per refund, and one that went through per attempt.
CREATE UNIQUE INDEX exits_one_pending ON payout.exits (refund_id) WHERE state = 'requested';
CREATE UNIQUE INDEX exits_one_per_attempt ON payout.exits (refund_id, attempt) WHERE state IN ('reinstated', 'done');
CREATE INDEX payouts_failed ON payout.payouts (finished_at) WHERE status = 'failed';
