-- The ledger invariant's terms as running totals, so the ledger watch costs what changed, not the whole
-- history (services/reconcile/store.py `ledger`). Statement triggers append each statement's net change
-- per (currency, term) to ledger_deltas -- an append, so no row is contended by every writer -- and the
-- watch folds the deltas into ledger_totals. `ledger_recomputed` still sums the tables themselves; the
-- watch compares both now and then (RECONCILE_LEDGER_RECHECK_SECONDS).
CREATE TABLE reconcile.ledger_totals (
    currency text NOT NULL,
    term     text NOT NULL,
    amount   numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (currency, term)
);
CREATE TABLE reconcile.ledger_deltas (
    id       bigserial PRIMARY KEY,
    currency text NOT NULL,
    term     text NOT NULL,
    amount   numeric NOT NULL
);
-- Which discrepancy categories hold paid money (domain.PAYOUT_CATEGORIES; the service writes it at start).
CREATE TABLE reconcile.ledger_payout_categories (category text PRIMARY KEY);
INSERT INTO reconcile.ledger_payout_categories VALUES
    ('missing_in_report'), ('amount_mismatch'), ('currency_mismatch'), ('fee_mismatch'), ('reversed');

-- What one row contributes to each term (the same conditions as ledger_recomputed).
CREATE FUNCTION reconcile.payout_terms(in_currency text, in_value bigint, in_state text)
RETURNS TABLE (currency text, term text, amount numeric) LANGUAGE sql STABLE AS $$
    SELECT $1, t.term, t.amount FROM (VALUES ('paid', $2::numeric),
        ('resolved', CASE WHEN $3 = 'resolved' THEN $2::numeric END),
        ('awaiting', CASE WHEN $3 = 'awaiting' THEN $2::numeric END)) AS t(term, amount)
    WHERE t.amount IS NOT NULL AND $1 IS NOT NULL
$$;
CREATE FUNCTION reconcile.line_terms(in_currency text, in_value bigint, in_fx_difference bigint, in_state text,
                                     in_kind text)
RETURNS TABLE (currency text, term text, amount numeric) LANGUAGE sql STABLE AS $$
    SELECT $1, t.term, t.amount FROM (VALUES ('matched', ($2 - $3)::numeric), ('fx_difference', $3::numeric))
        AS t(term, amount)
    WHERE $4 = 'matched' AND $5 = 'refund'
$$;
CREATE FUNCTION reconcile.discrepancy_terms(in_currency text, in_value bigint, in_status text, in_category text,
                                            in_refund_id text)
RETURNS TABLE (currency text, term text, amount numeric) LANGUAGE sql STABLE AS $$
    SELECT $1, t.term, t.amount FROM (VALUES ('open', $2::numeric),
        ('reversed', CASE WHEN $4 = 'reversed' THEN $2::numeric END)) AS t(term, amount)
    WHERE t.amount IS NOT NULL AND $1 IS NOT NULL AND $3 = 'open' AND $5 IS NOT NULL
      AND EXISTS (SELECT 1 FROM reconcile.ledger_payout_categories c WHERE c.category = $4)
$$;

-- One trigger function for the three tables: TG_ARGV[0] is the call of the table's terms function on a
-- row `r`. The statement's net change is its new rows' terms minus its old rows' (the operation says
-- which transition tables exist).
CREATE FUNCTION reconcile.ledger_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    terms text := TG_ARGV[0];
    changed text;
BEGIN
    changed := concat_ws(' UNION ALL ',
        CASE WHEN TG_OP <> 'DELETE' THEN format('SELECT t.* FROM new_rows r, %s t', terms) END,
        CASE WHEN TG_OP <> 'INSERT' THEN
            format('SELECT t.currency, t.term, -t.amount AS amount FROM old_rows r, %s t', terms) END);
    EXECUTE format('INSERT INTO reconcile.ledger_deltas (currency, term, amount) '
                   'SELECT currency, term, sum(amount) FROM (%s) c GROUP BY 1, 2 HAVING sum(amount) <> 0', changed);
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_inserted AFTER INSERT ON reconcile.payouts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.payout_terms(r.expected_currency, r.expected_value, r.state)');
CREATE TRIGGER ledger_updated AFTER UPDATE ON reconcile.payouts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.payout_terms(r.expected_currency, r.expected_value, r.state)');
CREATE TRIGGER ledger_deleted AFTER DELETE ON reconcile.payouts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.payout_terms(r.expected_currency, r.expected_value, r.state)');
CREATE TRIGGER ledger_inserted AFTER INSERT ON reconcile.settlement_lines REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.line_terms(r.currency, r.amount_value, r.fx_difference, r.state, r.kind)');
CREATE TRIGGER ledger_updated AFTER UPDATE ON reconcile.settlement_lines
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.line_terms(r.currency, r.amount_value, r.fx_difference, r.state, r.kind)');
CREATE TRIGGER ledger_deleted AFTER DELETE ON reconcile.settlement_lines REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.line_terms(r.currency, r.amount_value, r.fx_difference, r.state, r.kind)');
CREATE TRIGGER ledger_inserted AFTER INSERT ON reconcile.discrepancies REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.discrepancy_terms(r.expected_currency, r.expected_value, r.status, r.category, r.refund_id)');
CREATE TRIGGER ledger_updated AFTER UPDATE ON reconcile.discrepancies
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.discrepancy_terms(r.expected_currency, r.expected_value, r.status, r.category, r.refund_id)');
CREATE TRIGGER ledger_deleted AFTER DELETE ON reconcile.discrepancies REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconcile.ledger_changed(
        'reconcile.discrepancy_terms(r.expected_currency, r.expected_value, r.status, r.category, r.refund_id)');

-- The totals start from what is there, with writers held off meanwhile (the triggers count from here on).
LOCK TABLE reconcile.payouts, reconcile.settlement_lines, reconcile.discrepancies IN SHARE MODE;
INSERT INTO reconcile.ledger_totals (currency, term, amount)
SELECT currency, term, sum(amount) FROM (
    SELECT t.* FROM reconcile.payouts r, reconcile.payout_terms(r.expected_currency, r.expected_value, r.state) t
    UNION ALL
    SELECT t.* FROM reconcile.settlement_lines r,
        reconcile.line_terms(r.currency, r.amount_value, r.fx_difference, r.state, r.kind) t
    UNION ALL
    SELECT t.* FROM reconcile.discrepancies r,
        reconcile.discrepancy_terms(r.expected_currency, r.expected_value, r.status, r.category, r.refund_id) t
) c GROUP BY 1, 2;
