-- How often each refund's status was looked up (the repeat-inquiry KPI: look-ups per refund).
CREATE TABLE notify.tracking_lookups (
    refund_id text PRIMARY KEY,
    lookups   int NOT NULL,
    first_at  timestamptz NOT NULL,
    last_at   timestamptz NOT NULL
);
