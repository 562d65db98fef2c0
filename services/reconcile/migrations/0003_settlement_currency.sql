-- What the settlement report should show for a paid refund: its amount, or the
-- merchant-currency amount payout converted it to (the refund amount stays in amount_value).
ALTER TABLE reconcile.payouts ADD COLUMN expected_value bigint, ADD COLUMN expected_currency text;
UPDATE reconcile.payouts SET expected_value = amount_value, expected_currency = currency;
ALTER TABLE reconcile.payouts ALTER COLUMN expected_value SET NOT NULL, ALTER COLUMN expected_currency SET NOT NULL;
