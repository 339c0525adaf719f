-- Tables every broker reads, in shared.sqlite.
CREATE TABLE instruments (
    instrument_token bigint PRIMARY KEY,
    tradingsymbol text NOT NULL,
    exchange text NOT NULL,
    name text NOT NULL DEFAULT '',
    lot_size integer NOT NULL DEFAULT 1,
    tick_size text NOT NULL DEFAULT '0.05',
    updated_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE strategies (
    strategy_id text PRIMARY KEY,
    definition text NOT NULL,
    enabled integer NOT NULL DEFAULT 1,
    updated_by text NOT NULL DEFAULT '',
    updated_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);
