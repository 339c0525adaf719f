//! `report.html`: one self-contained page (inline SVG and CSS, no script, nothing fetched),
//! so it opens offline. Per (broker, strategy): the summary figures, the equity curve (total
//! PnL after each fill, fills marked at their own price, as `summary.json` computes it) and
//! its drawdown from the running peak, and the trade list (the first [`MAX_TRADES`]).

use std::fmt::Write;

use alpha_panda_config::Settings;
use alpha_panda_core::Decimal;
use alpha_panda_core::events::OrderFilled;
use alpha_panda_engine::portfolio::Book;

use super::{BacktestReport, StrategySummary, by_strategy, starting_cash};

/// Trades listed per strategy; the figures and charts cover all of them.
pub const MAX_TRADES: usize = 500;
/// Points drawn per chart; longer curves are thinned evenly (the last point is kept).
pub const MAX_POINTS: usize = 1_500;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 180.0;

/// Total PnL after each fill, replayed through the portfolio maths.
pub fn equity_curve(fills: &[&OrderFilled], starting_cash: Decimal) -> Vec<f64> {
    let mut book = Book::new(starting_cash);
    fills
        .iter()
        .map(|f| {
            book.apply_fill(
                f.instrument_token,
                f.side,
                f.quantity.get(),
                f.fill_price.get(),
                f.fees,
            );
            f64::try_from(book.total_pnl()).unwrap_or(0.0)
        })
        .collect()
}

/// How far each point is below the running peak (starting from 0), as a non-positive number.
pub fn drawdown(curve: &[f64]) -> Vec<f64> {
    let mut peak = 0.0f64;
    curve
        .iter()
        .map(|v| {
            peak = peak.max(*v);
            v - peak
        })
        .collect()
}

fn thin(values: &[f64]) -> Vec<(usize, f64)> {
    if values.len() <= MAX_POINTS {
        return values.iter().copied().enumerate().collect();
    }
    let step = values.len().div_ceil(MAX_POINTS);
    let mut out: Vec<(usize, f64)> = values.iter().copied().enumerate().step_by(step).collect();
    if out.last().map(|(i, _)| *i) != Some(values.len() - 1) {
        out.push((values.len() - 1, values[values.len() - 1]));
    }
    out
}

/// An SVG line chart of `values` (one point per fill), with a zero line.
fn chart(values: &[f64], class: &str, title: &str) -> String {
    let points = thin(values);
    let (min, max) = values
        .iter()
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = if max > min { max - min } else { 1.0 };
    let n = values.len().max(2) - 1;
    let x = |i: usize| i as f64 / n as f64 * WIDTH;
    let y = |v: f64| HEIGHT - (v - min) / span * HEIGHT;
    let mut d = String::new();
    for (k, (i, v)) in points.iter().enumerate() {
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if k == 0 { "M" } else { " L" },
            x(*i),
            y(*v)
        );
    }
    if points.len() == 1 {
        let _ = write!(d, " L{:.1},{:.1}", WIDTH, y(points[0].1));
    }
    format!(
        r#"<figure><figcaption>{title} (min {min:.2}, max {max:.2})</figcaption><svg class="chart {class}" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" role="img" aria-label="{title}"><line class="zero" x1="0" x2="{WIDTH}" y1="{z:.1}" y2="{z:.1}"/><path class="{class}" d="{d}"/></svg></figure>"#,
        z = y(0.0)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn summary_table(s: &StrategySummary) -> String {
    let rows = [
        ("trades", s.trades.to_string()),
        ("total PnL", s.total_pnl.to_string()),
        ("realized PnL", s.realized_pnl.to_string()),
        ("unrealized PnL", s.unrealized_pnl.to_string()),
        ("fees", s.fees.to_string()),
        ("win rate", s.win_rate.to_string()),
        ("max drawdown", s.max_drawdown.to_string()),
        ("Sharpe (per trade)", s.sharpe.to_string()),
    ];
    let mut t = String::from(r#"<table class="summary">"#);
    for (k, v) in rows {
        let _ = write!(t, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    t + "</table>"
}

fn trades_table(fills: &[&OrderFilled]) -> String {
    let mut t = String::from(
        r#"<table class="trades"><thead><tr><th>time</th><th>instrument</th><th>side</th><th>quantity</th><th>price</th><th>fees</th><th>order</th></tr></thead><tbody>"#,
    );
    for f in fills.iter().take(MAX_TRADES) {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.timestamp,
            f.instrument_token,
            f.side,
            f.quantity,
            f.fill_price,
            f.fees,
            escape(f.order_id.as_str())
        );
    }
    t += "</tbody></table>";
    if fills.len() > MAX_TRADES {
        let _ = write!(
            t,
            "<p class=\"note\">The first {MAX_TRADES} of {} trades; fills.jsonl has them all.</p>",
            fills.len()
        );
    }
    t
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
h2{margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:1em 0}th,td{padding:2px 10px;text-align:right;border-bottom:1px solid #eee}\
table.summary th{text-align:left}\
svg.chart{width:100%;max-width:800px;height:180px;border:1px solid #ddd;background:#fafafa}\
path{fill:none;stroke-width:1.5;vector-effect:non-scaling-stroke}path.equity{stroke:#1565c0}path.drawdown{stroke:#c62828}\
line.zero{stroke:#999;stroke-dasharray:4 4;vector-effect:non-scaling-stroke}\
figure{margin:1em 0}figcaption{font-size:90%;color:#555}.note{color:#555}";

/// The page of a backtest.
pub fn html(settings: &Settings, report: &BacktestReport) -> String {
    let mut body = format!(
        "<h1>Backtest</h1><p>{} ticks, {} fills, {} strategies.</p>",
        report.ticks,
        report.fills.len(),
        report.summaries.len()
    );
    if report.skipped_rows > 0 {
        let _ = write!(
            body,
            "<p class=\"note\">{} bad rows of the tick file were skipped.</p>",
            report.skipped_rows
        );
    }
    let groups = by_strategy(&report.fills);
    for s in &report.summaries {
        // A handful of groups: a search beats making a key.
        let fills = groups
            .iter()
            .find(|((broker, id), _)| *broker == s.broker && id.as_str() == s.strategy_id)
            .map(|(_, fills)| fills.as_slice())
            .unwrap_or_default();
        let curve = equity_curve(fills, starting_cash(settings, &s.broker));
        let _ = write!(
            body,
            "<section class=\"strategy\"><h2>{} on {}</h2>{}{}{}{}</section>",
            escape(&s.strategy_id),
            escape(&s.broker),
            summary_table(s),
            chart(&curve, "equity", "Equity: total PnL after each fill"),
            chart(
                &drawdown(&curve),
                "drawdown",
                "Drawdown from the running peak"
            ),
            trades_table(fills)
        );
    }
    if report.summaries.is_empty() {
        body += "<p>No fills.</p>";
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Alpha Panda backtest</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawdown_is_the_fall_from_the_running_peak() {
        assert_eq!(
            drawdown(&[1.0, 3.0, 2.0, 5.0, -1.0]),
            vec![0.0, 0.0, -1.0, 0.0, -6.0]
        );
    }

    #[test]
    fn long_curves_are_thinned_but_keep_their_last_point() {
        let v: Vec<f64> = (0..10_000).map(f64::from).collect();
        let t = thin(&v);
        assert!(t.len() <= MAX_POINTS + 1);
        assert_eq!(t.last(), Some(&(9_999, 9_999.0)));
        let svg = chart(&v, "equity", "t");
        assert!(
            svg.contains("<path class=\"equity\" d=\"M0.0,180.0 L"),
            "{svg}"
        );
    }
}
