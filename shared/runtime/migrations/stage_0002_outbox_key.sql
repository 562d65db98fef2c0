-- A row on a compacted topic deletes the older rows for its key (shared/stage.py): find them by key.
CREATE INDEX ON {schema}.outbox (topic, key);
