-- A refund the policy sends to review is verified before the review opens, so people never review a
-- payment its gateway disagrees with (and the feed can show it `on_hold`: pending_review ranks later).

-- The review to open once the payment agrees ({"rule_ids", "approvals", "roles"}); NULL: approve.
ALTER TABLE approval.verifications ADD COLUMN review jsonb;

-- Mismatch codes a person released on this refund's hold: its later review's approval is not held
-- again for them (only for a disagreement nobody has seen).
ALTER TABLE approval.reviews ADD COLUMN acknowledged text[] NOT NULL DEFAULT '{}';
