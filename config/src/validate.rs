//! Checks that need more than one field, or more than a type, to decide. Each failure names
//! the key, the value and what is expected.

use std::collections::BTreeSet;

use alpha_panda_core::Decimal;

use crate::settings::{BrokerKind, Feed, Settings};

/// (key, value as written, problem).
pub type Failure = (String, Option<String>, String);

/// The most slippage the paper fill model takes: 10 %. More is a typo, and 10 000 bps or
/// more would price a SELL at zero or below.
pub const MAX_SLIPPAGE_BPS: u32 = 1_000;

fn fail<T>(
    key: impl Into<String>,
    value: impl ToString,
    problem: impl Into<String>,
) -> Result<T, Failure> {
    Err((key.into(), Some(value.to_string()), problem.into()))
}

/// What only trading needs: credentials of the active live brokers. `run` checks it;
/// commands that only administer (topics, DLQ, config check, backtest) do not.
pub fn trading(s: &Settings) -> Result<(), Failure> {
    for b in &s.active_brokers {
        let Some(def) = s.brokers.get(b) else {
            continue;
        };
        if def.kind == BrokerKind::Zerodha && def.kite.api_key.is_none() {
            return Err((
                format!("brokers.{b}.kite.api_key"),
                None,
                format!(
                    "required while `{b}` (kind zerodha) is active: set it in the file or ALPHA_PANDA__BROKERS__{}__KITE__API_KEY",
                    b.as_str().to_ascii_uppercase()
                ),
            ));
        }
    }
    Ok(())
}

pub fn check(s: &Settings) -> Result<(), Failure> {
    brokers(s)?;
    admin(s)?;
    services(s)?;
    feed(s)?;
    strategies(s)?;
    risk(s)?;
    Ok(())
}

fn brokers(s: &Settings) -> Result<(), Failure> {
    if s.active_brokers.is_empty() {
        return fail(
            "active_brokers",
            "[]",
            "at least one broker must be active, e.g. [\"paper\"]",
        );
    }
    let mut seen = BTreeSet::new();
    for b in &s.active_brokers {
        if !seen.insert(b) {
            return fail("active_brokers", b, "listed twice");
        }
        let Some(def) = s.brokers.get(b) else {
            return fail(
                "active_brokers",
                b,
                format!(
                    "no broker `{b}` is defined: add [brokers.{b}] with kind = \"paper\" or \"zerodha\" and an account"
                ),
            );
        };
        if def.kind == BrokerKind::Zerodha {
            kite(b.as_str(), &def.kite)?;
        }
    }
    for (name, def) in &s.brokers {
        let m = &def.fill_model;
        let key = |f: &str| format!("brokers.{name}.fill_model.{f}");
        if m.slippage_bps.is_sign_negative() || m.slippage_bps > Decimal::from(MAX_SLIPPAGE_BPS) {
            return fail(
                key("slippage_bps"),
                m.slippage_bps,
                format!("must be 0 to {MAX_SLIPPAGE_BPS} basis points"),
            );
        }
        if m.starting_cash <= Decimal::ZERO {
            return fail(key("starting_cash"), m.starting_cash, "must be above 0");
        }
        let c = &m.charges;
        for (f, v) in [
            ("brokerage_pct", c.brokerage_pct),
            ("brokerage_cap", c.brokerage_cap),
            ("stt_sell_pct", c.stt_sell_pct),
            ("exchange_txn_pct", c.exchange_txn_pct),
            ("gst_pct", c.gst_pct),
            ("sebi_per_crore", c.sebi_per_crore),
            ("stamp_buy_pct", c.stamp_buy_pct),
        ] {
            if v.is_sign_negative() {
                return fail(
                    key(&format!("charges.{f}")),
                    v,
                    "a charge cannot be negative",
                );
            }
        }
    }
    Ok(())
}

/// The shortest admin token accepted: a bearer token guards trading, so one a person could
/// guess or brute-force over HTTP is refused at start.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 24;

fn admin(s: &Settings) -> Result<(), Failure> {
    if let Some(token) = &s.admin.token {
        let chars = token.chars().count();
        if chars < MIN_ADMIN_TOKEN_CHARS {
            // The value is a secret: the failure names the key and the length, never the token.
            return Err((
                "admin.token".to_owned(),
                None,
                format!(
                    "the admin token has {chars} characters; at least {MIN_ADMIN_TOKEN_CHARS} are required (e.g. `openssl rand -hex 16`), or leave it unset to disable admin commands"
                ),
            ));
        }
    }
    Ok(())
}

fn services(s: &Settings) -> Result<(), Failure> {
    if let Some(servers) = &s.kafka.bootstrap_servers {
        for server in servers.split(',') {
            let ok = server.trim().rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return fail(
                    "kafka.bootstrap_servers",
                    servers,
                    "expected host:port[,host:port…], e.g. 127.0.0.1:9092 (leave it out for the in-process transport)",
                );
            }
        }
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if s.kafka.group_prefix.is_empty() || !s.kafka.group_prefix.chars().all(ident) {
        return fail(
            "kafka.group_prefix",
            &s.kafka.group_prefix,
            "expected a non-empty name of letters, digits, '.', '_' or '-'",
        );
    }
    if let Some(id) = &s.kafka.instance_id
        && (id.is_empty() || !id.chars().all(ident))
    {
        return fail(
            "kafka.instance_id",
            id,
            "expected a non-empty name of letters, digits, '.', '_' or '-', unique per daemon",
        );
    }
    if s.kafka.client_id.is_empty() || !s.kafka.client_id.chars().all(ident) {
        return fail(
            "kafka.client_id",
            &s.kafka.client_id,
            "expected a non-empty name of letters, digits, '.', '_' or '-'",
        );
    }
    if s.kafka.linger_ms > 60_000 {
        return fail(
            "kafka.linger_ms",
            s.kafka.linger_ms,
            "expected 0 to 60000 milliseconds",
        );
    }
    if !(1..=1_000_000).contains(&s.kafka.max_batch_records) {
        return fail(
            "kafka.max_batch_records",
            s.kafka.max_batch_records,
            "expected 1 to 1000000",
        );
    }
    if s.data_dir.as_os_str().is_empty() {
        return fail(
            "data_dir",
            "\"\"",
            "expected a directory (the embedded default's data lives there)",
        );
    }
    if !(1..=10_000).contains(&s.delivery.batch_max_records) {
        return fail(
            "delivery.batch_max_records",
            s.delivery.batch_max_records,
            "expected 1 to 10000 records",
        );
    }
    if s.delivery.batch_max_ms > 1_000 {
        return fail(
            "delivery.batch_max_ms",
            s.delivery.batch_max_ms,
            "expected 0 to 1000 ms (0: a batch never waits for more records)",
        );
    }
    if !(1..=256).contains(&s.delivery.threads) {
        return fail(
            "delivery.threads",
            s.delivery.threads,
            "expected 1 to 256 threads (default: the number of cores)",
        );
    }
    if s.portfolio.snapshot_interval_secs > 86_400 {
        return fail(
            "portfolio.snapshot_interval_secs",
            s.portfolio.snapshot_interval_secs,
            "expected 0 (only on fills) to 86400 seconds",
        );
    }
    if !(6_000..=300_000).contains(&s.kafka.session_timeout_ms) {
        return fail(
            "kafka.session_timeout_ms",
            s.kafka.session_timeout_ms,
            "expected 6000 to 300000 milliseconds",
        );
    }
    if let Some(url) = &s.redis.url
        && !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| url.starts_with(p))
    {
        return fail(
            "redis.url",
            crate::mask::url(url),
            "expected redis://host:port[/db], rediss://… or unix://… (leave it out for the in-memory store)",
        );
    }
    if s.redis.dedup_ttl_secs < 60 {
        return fail(
            "redis.dedup_ttl_secs",
            s.redis.dedup_ttl_secs,
            "expected at least 60 seconds; it must outlive topic retention plus any DLQ replay window (default 604800 = 7 days)",
        );
    }
    if let Some(url) = &s.database.url
        && !["postgres://", "postgresql://", "sqlite://"]
            .iter()
            .any(|p| url.starts_with(p))
    {
        return fail(
            "database.url",
            crate::mask::url(url),
            "expected postgres://user@host:port/db or sqlite://DIRECTORY",
        );
    }
    let prefix = &s.database.schema_prefix;
    if prefix.len() > 30
        || prefix.starts_with(|c: char| c.is_ascii_digit())
        || !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return fail(
            "database.schema_prefix",
            format!("{prefix:?}"),
            "expected at most 30 lowercase letters, digits and _, not starting with a digit (or empty)",
        );
    }
    if !(1..=100_000).contains(&s.database.batch_records) {
        return fail(
            "database.batch_records",
            s.database.batch_records,
            "expected 1 to 100000 records",
        );
    }
    if !(1..=60_000).contains(&s.database.batch_ms) {
        return fail(
            "database.batch_ms",
            s.database.batch_ms,
            "expected 1 to 60000 milliseconds",
        );
    }
    if s.log.level.trim().is_empty() {
        return fail(
            "log.level",
            "\"\"",
            "expected a tracing filter such as info or alpha_panda=debug",
        );
    }
    Ok(())
}

fn kite(b: &str, k: &crate::settings::KiteSettings) -> Result<(), Failure> {
    let key = |name: &str| format!("brokers.{b}.kite.{name}");
    for (name, url, schemes) in [
        ("api_url", &k.api_url, ["https://", "http://"]),
        ("ticker_url", &k.ticker_url, ["wss://", "ws://"]),
    ] {
        if !schemes.iter().any(|p| url.starts_with(p)) {
            return Err((
                key(name),
                Some(format!("{url:?}")),
                format!(
                    "expected a URL starting with {} or {}",
                    schemes[0], schemes[1]
                ),
            ));
        }
    }
    for (name, v) in [
        ("orders_per_minute", u64::from(k.orders_per_minute)),
        ("orders_per_day", u64::from(k.orders_per_day)),
        ("request_timeout_ms", k.request_timeout_ms),
        ("ticker_read_timeout_secs", k.ticker_read_timeout_secs),
        ("order_poll_ms", k.order_poll_ms),
    ] {
        if v == 0 {
            return Err((
                key(name),
                Some("0".into()),
                "expected a number above 0".into(),
            ));
        }
    }
    if k.square_off_time().is_none() {
        return Err((
            key("square_off_at"),
            Some(format!("{:?}", k.square_off_at)),
            "expected an IST time as HH:MM, e.g. \"15:20\"".into(),
        ));
    }
    Ok(())
}

fn feed(s: &Settings) -> Result<(), Failure> {
    match &s.feed {
        Feed::Replay { file, .. } if !file.is_file() => fail(
            "feed.replay",
            file.display(),
            "no such file: give the path of a CSV or JSONL tick file",
        ),
        Feed::Kite
            if !s.active_brokers.iter().any(|b| {
                s.brokers
                    .get(b)
                    .is_some_and(|d| d.kind == BrokerKind::Zerodha)
            }) =>
        {
            fail(
                "feed",
                "\"kite\"",
                "the kite feed needs an active broker of kind zerodha",
            )
        }
        Feed::Kite
            if !s.active_brokers.iter().any(|b| {
                s.brokers.get(b).is_some_and(|d| {
                    d.kind == BrokerKind::Zerodha && !d.kite.ticker_instruments.is_empty()
                })
            }) =>
        {
            fail(
                "feed",
                "\"kite\"",
                "the kite feed needs instruments: set brokers.NAME.kite.ticker_instruments = [TOKEN, …] on the active zerodha broker",
            )
        }
        Feed::Synthetic => {
            let syn = &s.synthetic;
            if !(syn.ticks_per_second.is_finite() && syn.ticks_per_second > 0.0) {
                return fail(
                    "synthetic.ticks_per_second",
                    syn.ticks_per_second,
                    "expected a number above 0",
                );
            }
            if !(syn.volatility.is_finite() && (0.0..1.0).contains(&syn.volatility)) {
                return fail(
                    "synthetic.volatility",
                    syn.volatility,
                    "expected a per-tick standard deviation from 0 up to (not including) 1",
                );
            }
            if syn.instruments.is_empty() {
                return fail(
                    "synthetic.instruments",
                    "[]",
                    "the synthetic feed needs at least one instrument",
                );
            }
            let mut tokens = BTreeSet::new();
            for (i, inst) in syn.instruments.iter().enumerate() {
                if !tokens.insert(inst.instrument_token) {
                    return fail(
                        format!("synthetic.instruments[{i}].instrument_token"),
                        inst.instrument_token,
                        "listed twice",
                    );
                }
                if inst.start_price <= Decimal::ZERO {
                    return fail(
                        format!("synthetic.instruments[{i}].start_price"),
                        inst.start_price,
                        "expected a price above 0",
                    );
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn strategies(s: &Settings) -> Result<(), Failure> {
    let mut ids = BTreeSet::new();
    for (i, st) in s.strategies.iter().enumerate() {
        if !ids.insert(&st.id) {
            return fail(
                format!("strategies[{i}].id"),
                &st.id,
                "two strategies have this id",
            );
        }
        if st.instruments.is_empty() {
            return fail(
                format!("strategies[{i}].instruments"),
                "[]",
                "a strategy needs at least one instrument token",
            );
        }
        if st.brokers.is_empty() {
            return fail(
                format!("strategies[{i}].brokers"),
                "[]",
                "a strategy needs at least one broker, e.g. [\"paper\"]",
            );
        }
        if !matches!(
            st.order_type,
            alpha_panda_core::OrderType::Market | alpha_panda_core::OrderType::Limit
        ) {
            return fail(
                format!("strategies[{i}].order_type"),
                st.order_type,
                "a strategy places MARKET or LIMIT orders (stop orders need a trigger no strategy sets)",
            );
        }
        if st.limit_offset_bps < Decimal::ZERO || st.limit_offset_bps >= Decimal::from(10_000) {
            return fail(
                format!("strategies[{i}].limit_offset_bps"),
                st.limit_offset_bps,
                "must be at least 0 and below 10000 basis points",
            );
        }
        if let Err((key, problem)) = st.typed_params() {
            let key = if key.is_empty() {
                format!("strategies[{i}].params")
            } else {
                format!("strategies[{i}].params.{key}")
            };
            let value = st
                .params
                .get(key.rsplit('.').next().unwrap_or_default())
                .map(ToString::to_string);
            return Err((key, value, problem));
        }
        for b in &st.brokers {
            if !s.brokers.contains_key(b) {
                return fail(
                    format!("strategies[{i}].brokers"),
                    b,
                    format!("no broker `{b}` is defined under [brokers]"),
                );
            }
        }
    }
    Ok(())
}

fn risk(s: &Settings) -> Result<(), Failure> {
    for (broker, r) in &s.risk {
        let key = |f: &str| format!("risk.{broker}.{f}");
        if !s.brokers.contains_key(broker) {
            return Err((
                format!("risk.{broker}"),
                None,
                format!("no broker `{broker}` is defined under [brokers]"),
            ));
        }
        if r.price_band_pct <= Decimal::ZERO {
            return fail(
                key("price_band_pct"),
                r.price_band_pct,
                "expected a percentage above 0",
            );
        }
        if r.max_orders_per_second == 0 {
            return fail(
                key("max_orders_per_second"),
                0,
                "expected at least 1 (use kill_switch to stop orders)",
            );
        }
        for (i, day) in r.holidays.iter().enumerate() {
            if !is_date(day) {
                return fail(
                    format!("risk.{broker}.holidays[{i}]"),
                    format!("{day:?}"),
                    "expected a date YYYY-MM-DD",
                );
            }
        }
        for id in r.strategies.keys() {
            if !s.strategies.iter().any(|st| &st.id == id) {
                return Err((
                    format!("risk.{broker}.strategies.{id}"),
                    None,
                    format!("no strategy `{id}` is configured"),
                ));
            }
        }
    }
    Ok(())
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    matches!((num(0..4), num(5..7), num(8..10)), (Some(_), Some(m), Some(d)) if (1..=12).contains(&m) && (1..=31).contains(&d))
}
