-- A refund line whose gateway fee exceeds the allowed share of it.
ALTER TABLE reconcile.discrepancies DROP CONSTRAINT discrepancies_category_check;
ALTER TABLE reconcile.discrepancies ADD CONSTRAINT discrepancies_category_check
    CHECK (category IN ('missing_in_report', 'missing_internally', 'amount_mismatch', 'currency_mismatch',
                        'fee_mismatch', 'duplicate', 'reversed'));
