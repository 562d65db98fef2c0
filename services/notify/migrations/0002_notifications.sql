-- Who to tell, and how often the refund was looked up (the repeat-inquiry KPI).
ALTER TABLE notify.refund_status
    ADD COLUMN customer  jsonb,
    ADD COLUMN drill     boolean NOT NULL DEFAULT false,
    ADD COLUMN inquiries integer NOT NULL DEFAULT 0;
CREATE INDEX refund_status_request ON notify.refund_status (source, request_id);

-- One row per (refund, milestone, channel): the unique key is what makes a
-- notification happen once, however often its event is redelivered.
CREATE TABLE notify.notifications (
    id              bigserial PRIMARY KEY,
    refund_id       text NOT NULL,
    milestone       text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'webhook')),
    recipient       text NOT NULL,
    locale          text NOT NULL,
    context         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A `sending` row whose lease has run out was abandoned by a crashed sender.
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (refund_id, milestone, channel)
);
CREATE INDEX notifications_due ON notify.notifications (next_attempt_at) WHERE state IN ('pending', 'sending');

-- Customers who asked for no more email or SMS (per platform's customer id).
CREATE TABLE notify.opt_outs (
    source        text NOT NULL,
    customer_id   text NOT NULL,
    opted_out_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, customer_id)
);
