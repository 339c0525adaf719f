//! `alpha-panda trades export`: a broker's fills between two dates (trade dates in India
//! Standard Time, both included), optionally of one strategy, with their charges broken
//! down and the realized PnL of each round trip, as CSV (one line per fill; the round-trip
//! PnL on the fill that closes it) or JSON (`fills` and `round_trips`).

use alpha_panda_core::{BrokerName, Decimal, Side};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use serde::Serialize;

use crate::DbError;
use crate::schema::fills::dsl;
use crate::target::{Layout, connect_as_writer};
use crate::tradebook::{RoundTrip, TradeFill, round_trips};

/// India Standard Time, UTC+05:30 all year: contract notes are in it.
pub fn ist() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600 + 1800).unwrap_or_else(|| unreachable!("a valid offset"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub broker: BrokerName,
    pub strategy: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

type Loaded = (
    uuid::Uuid,
    String,
    Option<String>,
    String,
    i64,
    String,
    i64,
    (
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
    ),
    DateTime<Utc>,
);

/// The fills of the query from the broker's schema on PostgreSQL, read as its writer role.
pub fn load(url: &str, layout: &Layout, q: &Query) -> Result<Vec<TradeFill>, DbError> {
    let start = day_start(q.from);
    let end = day_start(q.to.succ_opt().unwrap_or(q.to));
    let mut conn = connect_as_writer(url, layout, &q.broker)?;
    let mut query = dsl::fills
        .filter(dsl::event_ts.ge(start))
        .filter(dsl::event_ts.lt(end))
        .into_boxed();
    if let Some(s) = &q.strategy {
        query = query.filter(dsl::strategy_id.eq(s.clone()));
    }
    let rows: Vec<Loaded> = query
        .order((dsl::event_ts.asc(), dsl::event_id.asc()))
        .select((
            dsl::event_id,
            dsl::order_id,
            dsl::trade_id,
            dsl::strategy_id,
            dsl::instrument_token,
            dsl::side,
            dsl::quantity,
            (
                dsl::price,
                dsl::brokerage,
                dsl::stt,
                dsl::exchange_txn,
                dsl::gst,
                dsl::sebi,
                dsl::stamp,
                dsl::fees,
            ),
            dsl::event_ts,
        ))
        .load(&mut conn)
        .map_err(DbError::query(format!("reading the fills of {}", q.broker)))?;
    rows.into_iter()
        .map(
            |(id, order_id, trade_id, strategy_id, token, side, qty, money, ts)| {
                let (price, brokerage, stt, exchange_txn, gst, sebi, stamp, fees) = money;
                let side = side.parse::<Side>().map_err(|_| {
                    DbError::Io(format!("fill {id}: side {side:?} is neither BUY nor SELL"))
                })?;
                Ok(TradeFill {
                    event_id: id.to_string(),
                    order_id,
                    trade_id,
                    strategy_id,
                    instrument_token: token,
                    side,
                    quantity: u64::try_from(qty).unwrap_or(0),
                    price,
                    brokerage,
                    stt,
                    exchange_txn,
                    gst,
                    sebi,
                    stamp,
                    fees,
                    ts,
                })
            },
        )
        .collect()
}

/// A `fills` row of a broker's SQLite file: decimals and times as the text stored.
#[derive(diesel::QueryableByName)]
struct SqliteFill {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    order_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    trade_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    strategy_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    instrument_token: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    side: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    quantity: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    price: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    brokerage: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    stt: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    exchange_txn: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    gst: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    sebi: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    stamp: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    fees: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_ts: String,
}

/// The fills of the query from the broker's SQLite file in `dir` (the embedded default's
/// data directory, or a `sqlite://DIR` database), as the recorder wrote them.
pub fn load_sqlite(
    dir: &std::path::Path,
    layout: &Layout,
    q: &Query,
) -> Result<Vec<TradeFill>, DbError> {
    use diesel::sql_types::Text;
    let path = layout.broker_file(dir, &q.broker);
    if !path.exists() {
        return Err(DbError::Io(format!(
            "{} does not exist: no fills were recorded for {} in {}",
            path.display(),
            q.broker,
            dir.display()
        )));
    }
    let mut conn = crate::target::connect_sqlite(&path)?;
    // Times are stored as RFC 3339 text in UTC with microseconds, so text order is time order.
    let text = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (start, end) = (
        text(day_start(q.from)),
        text(day_start(q.to.succ_opt().unwrap_or(q.to))),
    );
    let select = "SELECT event_id, order_id, trade_id, strategy_id, instrument_token, side, \
                  quantity, price, brokerage, stt, exchange_txn, gst, sebi, stamp, fees, event_ts \
                  FROM fills WHERE event_ts >= ? AND event_ts < ?";
    let rows: Vec<SqliteFill> = match &q.strategy {
        Some(strategy) => diesel::sql_query(format!(
            "{select} AND strategy_id = ? ORDER BY event_ts, event_id"
        ))
        .bind::<Text, _>(&start)
        .bind::<Text, _>(&end)
        .bind::<Text, _>(strategy)
        .load(&mut conn),
        None => diesel::sql_query(format!("{select} ORDER BY event_ts, event_id"))
            .bind::<Text, _>(&start)
            .bind::<Text, _>(&end)
            .load(&mut conn),
    }
    .map_err(DbError::query(format!(
        "reading the fills of {}",
        path.display()
    )))?;
    rows.into_iter()
        .map(|r| {
            let id = r.event_id.clone();
            let decimal = |field: &str, v: &str| {
                v.parse::<Decimal>().map_err(|e| {
                    DbError::Io(format!("fill {id}: {field} {v:?} is not a decimal: {e}"))
                })
            };
            let side = r.side.parse::<Side>().map_err(|_| {
                DbError::Io(format!(
                    "fill {id}: side {:?} is neither BUY nor SELL",
                    r.side
                ))
            })?;
            let ts = DateTime::parse_from_rfc3339(&r.event_ts)
                .map_err(|e| DbError::Io(format!("fill {id}: event_ts {:?}: {e}", r.event_ts)))?
                .with_timezone(&Utc);
            Ok(TradeFill {
                price: decimal("price", &r.price)?,
                brokerage: decimal("brokerage", &r.brokerage)?,
                stt: decimal("stt", &r.stt)?,
                exchange_txn: decimal("exchange_txn", &r.exchange_txn)?,
                gst: decimal("gst", &r.gst)?,
                sebi: decimal("sebi", &r.sebi)?,
                stamp: decimal("stamp", &r.stamp)?,
                fees: decimal("fees", &r.fees)?,
                event_id: r.event_id,
                order_id: r.order_id,
                trade_id: r.trade_id,
                strategy_id: r.strategy_id,
                instrument_token: r.instrument_token,
                side,
                quantity: u64::try_from(r.quantity).unwrap_or(0),
                ts,
            })
        })
        .collect()
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match midnight.and_local_timezone(ist()) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        _ => midnight.and_utc(),
    }
}

/// A fill line of the export.
#[derive(Debug, Serialize)]
struct Line<'a> {
    trade_date: String,
    trade_time: String,
    strategy_id: &'a str,
    instrument_token: i64,
    side: String,
    quantity: u64,
    price: Decimal,
    turnover: Decimal,
    brokerage: Decimal,
    stt: Decimal,
    exchange_txn: Decimal,
    gst: Decimal,
    sebi: Decimal,
    stamp: Decimal,
    total_charges: Decimal,
    /// What the fill paid (negative) or received: turnover ∓ charges.
    net_amount: Decimal,
    order_id: &'a str,
    trade_id: &'a str,
    event_id: &'a str,
    round_trip: usize,
    /// Net realized PnL of the round trip this fill closes; empty otherwise.
    realized_pnl: Option<Decimal>,
}

fn money(d: Decimal) -> Decimal {
    let mut r = d.round_dp(2);
    r.rescale(2);
    r
}

fn lines<'a>(fills: &'a [TradeFill], trips: &[RoundTrip], of: &[usize]) -> Vec<Line<'a>> {
    fills
        .iter()
        .zip(of)
        .map(|(f, &trip)| {
            let at = f.ts.with_timezone(&ist());
            let turnover = f.turnover();
            let closes = trips
                .get(trip)
                .filter(|t| t.closed == Some(f.ts))
                .map(|t| money(t.net_pnl));
            Line {
                trade_date: at.format("%Y-%m-%d").to_string(),
                trade_time: at.format("%H:%M:%S").to_string(),
                strategy_id: &f.strategy_id,
                instrument_token: f.instrument_token,
                side: f.side.to_string(),
                quantity: f.quantity,
                price: f.price,
                turnover: money(turnover),
                brokerage: money(f.brokerage),
                stt: money(f.stt),
                exchange_txn: money(f.exchange_txn),
                gst: money(f.gst),
                sebi: money(f.sebi),
                stamp: money(f.stamp),
                total_charges: money(f.fees),
                net_amount: money(match f.side {
                    Side::Buy => -(turnover + f.fees),
                    Side::Sell => turnover - f.fees,
                }),
                order_id: &f.order_id,
                trade_id: f.trade_id.as_deref().unwrap_or(""),
                event_id: &f.event_id,
                round_trip: trip + 1,
                realized_pnl: closes,
            }
        })
        .collect()
}

/// The export text of `fills` in `format`.
pub fn render(fills: &[TradeFill], format: Format) -> Result<String, DbError> {
    let (trips, of) = round_trips(fills);
    let lines = lines(fills, &trips, &of);
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for l in &lines {
                w.serialize(l)
                    .map_err(|e| DbError::Io(format!("writing CSV: {e}")))?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| DbError::Io(format!("writing CSV: {e}")))?;
            String::from_utf8(bytes).map_err(|e| DbError::Io(format!("writing CSV: {e}")))
        }
        Format::Json => {
            let trips: Vec<RoundTrip> = trips
                .into_iter()
                .map(|mut t| {
                    for v in [
                        &mut t.buy_value,
                        &mut t.sell_value,
                        &mut t.charges,
                        &mut t.gross_pnl,
                        &mut t.net_pnl,
                    ] {
                        *v = money(*v);
                    }
                    t
                })
                .collect();
            let body = serde_json::json!({ "fills": lines, "round_trips": trips });
            serde_json::to_string_pretty(&body)
                .map(|s| s + "\n")
                .map_err(|e| DbError::Io(format!("writing JSON: {e}")))
        }
    }
}
