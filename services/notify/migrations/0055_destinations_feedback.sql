-- A customer's new bank account for a failed refund, given on the signed page: one per failed payout
-- attempt (the account itself travels sealed for payout on refunds.destinations; only its masked
-- summary stays here).
CREATE TABLE notify.destinations (
    refund_id   text NOT NULL,
    attempt     int NOT NULL,
    channel     text NOT NULL,
    summary     text NOT NULL,
    provided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, attempt)
);

-- The customer's rating of a finished refund: one per refund, updatable.
CREATE TABLE notify.feedback (
    refund_id  text PRIMARY KEY,
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment    text CHECK (char_length(comment) <= 1000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
