-- The stuck-stage watch moves onto the status row, so an event is one upsert instead of two
-- (deadlines and drill were already there; a drill's reconciled time is timeline ->> 'reconciled').
-- A refund whose status predates 0050 has no stage until its next event.
ALTER TABLE notify.refund_status
    ADD COLUMN stage       text,
    ADD COLUMN stage_rank  int,
    ADD COLUMN entered_at  timestamptz,
    ADD COLUMN accepted_at timestamptz;

UPDATE notify.refund_status s
SET stage = w.stage, stage_rank = w.stage_rank, entered_at = w.entered_at, accepted_at = w.accepted_at,
    deadlines = COALESCE(s.deadlines, w.deadlines), drill = s.drill OR w.drill
FROM notify.stage_watch w
WHERE w.refund_id = s.refund_id;

CREATE INDEX refund_status_open_stage ON notify.refund_status (stage) WHERE stage <> 'done';
CREATE INDEX refund_status_drills ON notify.refund_status ((timeline ->> 'reconciled')) WHERE drill;

DROP TABLE notify.stage_watch;

-- Kept under its old name, read-only, for the drill runbook and ad-hoc queries.
CREATE VIEW notify.stage_watch AS
SELECT refund_id, stage, stage_rank, entered_at, deadlines, drill, accepted_at,
       (timeline ->> 'reconciled')::timestamptz AS reconciled_at
FROM notify.refund_status
WHERE stage IS NOT NULL;
