//! diesel's view of a broker's tables on PostgreSQL. Names are unqualified: a connection
//! reaches one broker's schema through its `search_path` (`target::connect_as_writer`),
//! so the same definitions serve every broker. The SQL is in `migrations/postgres/`.

diesel::table! {
    orders (event_id) {
        event_id -> Uuid,
        order_id -> Text,
        state -> Text,
        strategy_id -> Text,
        instrument_token -> BigInt,
        side -> Text,
        quantity -> BigInt,
        price -> Numeric,
        broker_order_id -> Nullable<Text>,
        error_message -> Nullable<Text>,
        event_ts -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    fills (event_id) {
        event_id -> Uuid,
        order_id -> Text,
        trade_id -> Nullable<Text>,
        account -> Text,
        strategy_id -> Text,
        instrument_token -> BigInt,
        side -> Text,
        quantity -> BigInt,
        price -> Numeric,
        fees -> Numeric,
        brokerage -> Numeric,
        stt -> Numeric,
        exchange_txn -> Numeric,
        gst -> Numeric,
        sebi -> Numeric,
        stamp -> Numeric,
        event_ts -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    pnl_snapshots (event_id) {
        event_id -> Uuid,
        strategy_id -> Text,
        realized_pnl -> Numeric,
        unrealized_pnl -> Numeric,
        total_pnl -> Numeric,
        fees -> Numeric,
        cash -> Numeric,
        positions -> Jsonb,
        event_ts -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    signal_rejections (event_id) {
        event_id -> Uuid,
        strategy_id -> Text,
        instrument_token -> BigInt,
        side -> Text,
        quantity -> BigInt,
        price -> Numeric,
        reason -> Text,
        event_ts -> Timestamptz,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    recorder_offsets (topic, partition) {
        topic -> Text,
        partition -> Integer,
        next_offset -> BigInt,
        updated_at -> Timestamptz,
    }
}
