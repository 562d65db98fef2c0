-- Where each refund is in the pipeline and when each stage is due (the ticket's `deadlines`
-- from refund.accepted.v1), so notify can report overdue refunds per stage even while
-- that stage's own service is down. stage 'done' = left the pipeline.
CREATE TABLE notify.stage_watch (
    refund_id     text PRIMARY KEY,
    stage         text NOT NULL,
    stage_rank    int NOT NULL,
    entered_at    timestamptz NOT NULL,
    deadlines     jsonb,
    drill         boolean NOT NULL DEFAULT false,
    accepted_at   timestamptz,
    reconciled_at timestamptz
);
CREATE INDEX stage_watch_open ON notify.stage_watch (stage) WHERE stage <> 'done';
CREATE INDEX stage_watch_drills ON notify.stage_watch (reconciled_at) WHERE drill;
