-- Exits out of a failed payout (services/intake/reinstate.py): a failed payout gave the ticket's amount
-- back; an exit reserves it again for the payout's next attempt. `payout_attempt` is the attempt the
-- ticket's amount is (or, once released, was last) reserved for: only a payout-failed of that attempt
-- releases it, so a late or re-sent failure of an older attempt never gives the amount back twice.
ALTER TABLE intake.tickets
    ADD COLUMN payout_attempt int NOT NULL DEFAULT 1 CHECK (payout_attempt >= 1),
    ADD COLUMN reinstated_at  timestamptz;
