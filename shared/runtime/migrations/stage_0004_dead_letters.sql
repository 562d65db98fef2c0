-- Every stage keeps the records it dead-letters, written in the same transaction as their refunds.dlq
-- outbox row, so they can be read decoded, replayed through this stage once the cause is fixed, or
-- discarded (shared/runtime/dead_letters.py). Pruned with the inbox: a replay must fall inside the
-- inbox's memory, or a record already processed could be processed twice.
CREATE TABLE {schema}.dead_letters (
    id               bigserial PRIMARY KEY,
    topic            text NOT NULL,
    "partition"      integer NOT NULL,
    "offset"         bigint NOT NULL,
    "timestamp"      bigint NOT NULL DEFAULT 0,
    key              bytea,
    value            bytea NOT NULL,
    -- The record's headers in order, each [name, base64 value] (a replay gives the handler the same bytes).
    headers          jsonb NOT NULL DEFAULT '[]',
    reason           text NOT NULL,
    -- What broke, never the values it broke on (shared/runtime/safe_errors.py).
    error            text NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    state            text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'replayed', 'discarded')),
    handled_by       text,
    handled_reason   text,
    handled_at       timestamptz,
    -- A replay that dead-letters again makes a new dead letter: each names the other.
    replay_of        bigint REFERENCES {schema}.dead_letters (id) ON DELETE SET NULL,
    replayed_as      bigint REFERENCES {schema}.dead_letters (id) ON DELETE SET NULL,
    CHECK ((state = 'open') = (handled_at IS NULL))
);
CREATE INDEX ON {schema}.dead_letters (state, id);
CREATE INDEX ON {schema}.dead_letters USING brin (dead_lettered_at);
