-- Retries are scheduled in the row itself (`next_attempt_at`), so they survive
-- restarts and never hold a Kafka partition. `confirming`: the gateway accepted
-- but confirms asynchronously; `reversed`: it paid, then the money came back.
ALTER TABLE payout.payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payout.payouts ADD CONSTRAINT payouts_status_check
    CHECK (status IN ('pending', 'submitting', 'confirming', 'succeeded', 'failed', 'reversed'));
ALTER TABLE payout.payouts
    ADD COLUMN next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error          text,
    ADD COLUMN recovered_by_lookup boolean NOT NULL DEFAULT false,
    ADD COLUMN routed_from         text,
    ADD COLUMN eta                 timestamptz,
    ADD COLUMN reversed_at         timestamptz,
    -- The merchant's settlement currency, when it differs from the refund's, and the rate used.
    ADD COLUMN settlement_value    bigint,
    ADD COLUMN settlement_currency text,
    ADD COLUMN fx_rate             numeric,
    ADD COLUMN fx_source           text;
DROP INDEX payout.payouts_open;
CREATE INDEX payouts_due ON payout.payouts (next_attempt_at) WHERE status IN ('pending', 'submitting', 'confirming');
CREATE INDEX payouts_recently_paid ON payout.payouts (finished_at) WHERE status = 'succeeded';

-- Recorded FX rates: 1 base = rate quote, with where the rate came from.
CREATE TABLE payout.fx_rates (
    base   text NOT NULL,
    quote  text NOT NULL,
    rate   numeric NOT NULL CHECK (rate > 0),
    source text NOT NULL,
    as_of  date NOT NULL,
    PRIMARY KEY (base, quote, as_of)
);
-- A seed snapshot so a local stack can convert; production loads its rate feed here.
INSERT INTO payout.fx_rates (base, quote, rate, source, as_of) VALUES
    ('EUR', 'USD', 1.0812, 'seed-snapshot', '2026-11-24'),
    ('USD', 'EUR', 0.9249, 'seed-snapshot', '2026-11-24'),
    ('GBP', 'EUR', 1.1893, 'seed-snapshot', '2026-11-24'),
    ('JPY', 'USD', 0.006702, 'seed-snapshot', '2026-11-24'),
    ('KWD', 'USD', 3.2541, 'seed-snapshot', '2026-11-24'),
    ('CNY', 'USD', 0.1381, 'seed-snapshot', '2026-11-24');
