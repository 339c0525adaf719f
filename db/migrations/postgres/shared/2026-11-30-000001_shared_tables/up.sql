-- Tables every broker reads, in the shared schema.
CREATE TABLE instruments (
    instrument_token bigint PRIMARY KEY,
    tradingsymbol text NOT NULL,
    exchange text NOT NULL,
    name text NOT NULL DEFAULT '',
    lot_size integer NOT NULL DEFAULT 1,
    tick_size numeric NOT NULL DEFAULT 0.05,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE strategies (
    strategy_id text PRIMARY KEY,
    definition jsonb NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
