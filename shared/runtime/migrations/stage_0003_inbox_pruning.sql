-- The inbox is pruned by age (shared/stage.py `prune_inbox`); BRIN: rows arrive in received_at order,
-- so the index costs next to nothing per insert, unlike a btree.
CREATE INDEX ON {schema}.inbox USING brin (received_at);
