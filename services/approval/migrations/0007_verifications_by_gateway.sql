-- The verifier claims one gateway's due rows at a time (store.claim_verifications): without the gateway
-- in the index every claim read all due rows of every gateway (pg_stat_statements: the most expensive
-- statement of the whole stack under make bench, 0.6 ms a claim).
CREATE INDEX verifications_due_by_gateway ON approval.verifications (gateway, next_check_at);
