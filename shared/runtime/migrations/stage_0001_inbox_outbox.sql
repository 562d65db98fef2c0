-- Every stage's inbox (which events it processed) and outbox (what it must publish),
-- written in the same transaction as the state they belong to. {schema} is the stage's.
CREATE TABLE {schema}.inbox (
    source      text NOT NULL,
    event_id    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

CREATE TABLE {schema}.outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        text,
    value      bytea NOT NULL,
    headers    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {schema}.outbox (created_at);
