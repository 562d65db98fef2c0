-- A refund that ends without money moving (denied, failed) or whose money comes back (reversed)
-- gives its amount back to its payment, once: `released_at` marks the ticket whose amount went
-- back and `released_as` the status that ended it, set in the transaction that lowers
-- payment_balances.refunded. The ticket names its payment as the balance's key does.
ALTER TABLE intake.tickets
    ADD COLUMN payment_gateway text,
    ADD COLUMN payment_id      text,
    ADD COLUMN released_at     timestamptz,
    ADD COLUMN released_as     text,
    ADD CONSTRAINT tickets_released_only_if_accepted CHECK (released_at IS NULL OR outcome = 'accepted');

-- Tickets from before: their payment from the accepted event they keep (payment_key joins gateway
-- and id with '/', which either may contain, so it cannot be split back).
UPDATE intake.tickets
SET payment_gateway = convert_from(outcome_value, 'UTF8')::jsonb #>> '{data,payment,gateway}',
    payment_id      = convert_from(outcome_value, 'UTF8')::jsonb #>> '{data,payment,id}'
WHERE outcome = 'accepted';
