-- Stripe-style idempotency: the hash of the canonical body a refund was first
-- asked with, so a re-send with a different body is told apart from a retry.
-- NULL on tickets from before this migration (treated as matching).
ALTER TABLE intake.tickets ADD COLUMN request_hash text;

-- The ticket's due time per stage (deploy/sla.yaml): {"intake": RFC 3339, ...}.
ALTER TABLE intake.tickets ADD COLUMN deadlines jsonb;

-- Platform API keys for POST /v1/refunds. Only the SHA-256 of a key is kept;
-- key_id is its visible prefix, to tell keys apart in lists and logs. A source
-- may hold several active keys at once, so keys rotate without downtime.
CREATE TABLE intake.api_keys (
    key_id     text PRIMARY KEY,
    source     text NOT NULL,
    key_hash   text NOT NULL UNIQUE,
    label      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_keys_source ON intake.api_keys (source);
