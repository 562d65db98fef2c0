-- A gateway reference is unique only on its own gateway: two gateways may issue the same string.
-- Payouts, settlement lines and discrepancies are matched on (gateway, gateway_ref).
ALTER TABLE reconcile.payouts DROP CONSTRAINT payouts_gateway_ref_key;
ALTER TABLE reconcile.payouts ADD CONSTRAINT payouts_gateway_gateway_ref_key UNIQUE (gateway, gateway_ref);

DROP INDEX reconcile.settlement_lines_ref;
CREATE INDEX settlement_lines_ref ON reconcile.settlement_lines (gateway, gateway_ref);

-- A discrepancy is about a line (its report's gateway) or a paid refund (the gateway that paid it).
ALTER TABLE reconcile.discrepancies ADD COLUMN gateway text;
UPDATE reconcile.discrepancies d SET gateway = l.gateway
    FROM reconcile.settlement_lines l WHERE d.line_id = l.id;
UPDATE reconcile.discrepancies d SET gateway = p.gateway
    FROM reconcile.payouts p WHERE d.gateway IS NULL AND d.refund_id = p.refund_id;
ALTER TABLE reconcile.discrepancies ALTER COLUMN gateway SET NOT NULL;

DROP INDEX reconcile.discrepancies_one_open;
CREATE UNIQUE INDEX discrepancies_one_open
    ON reconcile.discrepancies (category, gateway, gateway_ref, coalesce(line_id, 0)) WHERE status = 'open';
CREATE INDEX discrepancies_open_ref ON reconcile.discrepancies (gateway, gateway_ref) WHERE status = 'open';
