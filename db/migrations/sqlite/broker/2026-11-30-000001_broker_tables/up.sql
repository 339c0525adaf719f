-- The tables of one broker, in that broker's own SQLite file (SQLite has no schemas;
-- decimals are exact decimal text). Every row written from an event has that event's id as its key,
-- so a replayed or duplicated record changes nothing.

-- Every state an order passed through: one row per order event (submitted, ack, filled,
-- failed).
CREATE TABLE orders (
    event_id text PRIMARY KEY,
    order_id text NOT NULL,
    state text NOT NULL CHECK (state IN ('submitted', 'ack', 'filled', 'failed')),
    strategy_id text NOT NULL,
    instrument_token bigint NOT NULL,
    side text NOT NULL,
    quantity bigint NOT NULL,
    price text NOT NULL,
    broker_order_id text,
    error_message text,
    event_ts text NOT NULL,
    recorded_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX orders_by_order ON orders (order_id, event_ts);

-- One row per fill, its charges broken down by the broker's charges model.
CREATE TABLE fills (
    event_id text PRIMARY KEY,
    order_id text NOT NULL,
    trade_id text,
    account text NOT NULL,
    strategy_id text NOT NULL,
    instrument_token bigint NOT NULL,
    side text NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity bigint NOT NULL,
    price text NOT NULL,
    fees text NOT NULL,
    brokerage text NOT NULL,
    stt text NOT NULL,
    exchange_txn text NOT NULL,
    gst text NOT NULL,
    sebi text NOT NULL,
    stamp text NOT NULL,
    event_ts text NOT NULL,
    recorded_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX fills_by_strategy_time ON fills (strategy_id, event_ts);
CREATE INDEX fills_by_time ON fills (event_ts);

CREATE TABLE pnl_snapshots (
    event_id text PRIMARY KEY,
    strategy_id text NOT NULL,
    realized_pnl text NOT NULL,
    unrealized_pnl text NOT NULL,
    total_pnl text NOT NULL,
    fees text NOT NULL,
    cash text NOT NULL,
    positions text NOT NULL,
    event_ts text NOT NULL,
    recorded_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX pnl_snapshots_by_strategy_time ON pnl_snapshots (strategy_id, event_ts);

-- Signals risk refused (signals.rejected): never an order, kept for the record.
CREATE TABLE signal_rejections (
    event_id text PRIMARY KEY,
    strategy_id text NOT NULL,
    instrument_token bigint NOT NULL,
    side text NOT NULL,
    quantity bigint NOT NULL,
    price text NOT NULL,
    reason text NOT NULL,
    event_ts text NOT NULL,
    recorded_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE trading_state_changes (
    id integer PRIMARY KEY AUTOINCREMENT,
    strategy_id text,
    state text NOT NULL,
    changed_by text NOT NULL,
    reason text NOT NULL DEFAULT '',
    changed_at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Who did what, from where, when, and the outcome.
CREATE TABLE admin_audit (
    id integer PRIMARY KEY AUTOINCREMENT,
    actor text NOT NULL,
    remote_addr text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    outcome text NOT NULL,
    detail text NOT NULL DEFAULT '',
    at text NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- The recorder's consumed offsets, written in the same transaction as the rows.
CREATE TABLE recorder_offsets (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at text NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (topic, partition)
);
