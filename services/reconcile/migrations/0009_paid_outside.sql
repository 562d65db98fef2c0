-- A refund staff recorded as paid outside the pipeline (payout's `paid_outside` exit): no gateway settles
-- it, so it is recorded paid and opens a `paid_outside` discrepancy at once, which finance resolves by hand
-- with a reason (the ledger counts it as open until then, resolved after). `attempt`: the payout attempt
-- that paid (a refund has at most one).
ALTER TABLE reconcile.discrepancies DROP CONSTRAINT discrepancies_category_check;
ALTER TABLE reconcile.discrepancies ADD CONSTRAINT discrepancies_category_check
    CHECK (category IN ('missing_in_report', 'missing_internally', 'amount_mismatch', 'currency_mismatch',
                        'fee_mismatch', 'duplicate', 'reversed', 'paid_outside'));
INSERT INTO reconcile.ledger_payout_categories VALUES ('paid_outside') ON CONFLICT DO NOTHING;
ALTER TABLE reconcile.payouts
    ADD COLUMN attempt      int NOT NULL DEFAULT 1,
    ADD COLUMN paid_outside boolean NOT NULL DEFAULT false;
