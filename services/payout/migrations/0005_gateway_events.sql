-- Outcomes the gateways reported by webhook, one row per gateway event id (Stripe: the event id;
-- Adyen: eventCode:pspReference:success): a replayed id is not recorded again and changes nothing.
-- `refund_id`: the payout whose current idempotency key the event names (NULL: none does).
-- `applied_at` NULL: that payout was `submitting` when the event came (a claim's gateway call under
-- way); the claim's own write applies it, in the same transaction, or the next claim's does.
CREATE TABLE payout.gateway_events (
    gateway        text NOT NULL,
    event_id       text NOT NULL,
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    refund_id      text,
    refund_key     text,
    gateway_ref    text,
    status         text NOT NULL CHECK (status IN ('succeeded', 'failed', 'reversed')),
    failure_reason text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    -- What applying it did: paid, failed, rerouted, reversed, or why nothing (unchanged, superseded, no_payout).
    effect         text,
    PRIMARY KEY (gateway, event_id)
);
CREATE INDEX gateway_events_waiting ON payout.gateway_events (refund_id) WHERE applied_at IS NULL;
-- Reversals arrive by webhook now; nothing scans recently paid payouts any more.
DROP INDEX IF EXISTS payout.payouts_recently_paid;
