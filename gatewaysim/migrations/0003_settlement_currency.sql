-- What a refund moves the merchant's balance by, in its settlement currency
-- (the same as the refund's unless the merchant settles in another one).
ALTER TABLE gateway_sim.refunds ADD COLUMN settle_value bigint, ADD COLUMN settle_currency text;
UPDATE gateway_sim.refunds SET settle_value = amount_value, settle_currency = currency;
ALTER TABLE gateway_sim.refunds ALTER COLUMN settle_value SET NOT NULL, ALTER COLUMN settle_currency SET NOT NULL;
