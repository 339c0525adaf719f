//! The operations HTTP server (DESIGN §3.7, docs/operations.md): liveness, readiness,
//! metrics, status, positions, and the admin commands that steer the daemon.
//!
//! Admin routes need `Authorization: Bearer <admin.token>`; with no token configured they
//! answer 403 and do nothing. The token is compared as SHA-256 digests (fixed size, no early
//! exit), so neither its bytes nor its length show in the answer's timing. Routes that show
//! positions and PnL (`/status`, `/portfolio/{broker}`, the console's data) need the same
//! token when one is configured; `/healthz`, `/readyz` and `/metrics` stay open for probes
//! and Prometheus. Every admin command is logged with the caller's address (target
//! `alpha_panda::audit`) and counted in `alpha_panda_admin_actions_total`.
//!
//! Every call under `/admin/` — refused, malformed or done — is reported once to
//! [`Control::record`] (`admin_audit`): the caller's token fingerprint or `anonymous`, the
//! peer address, method and path, a summary of the body, the status and the error the
//! answer gave. `POST /admin/strategies/reload` runs the daemon's reloader on a blocking
//! thread and answers 200 with the new generation or 422 with every reason.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, get, post, web};
use alpha_panda_config::Settings;
use alpha_panda_core::{BrokerName, TradingState};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{AdminCall, AuditEvent, fingerprint, summary};
use crate::console::{Console, assets};
use crate::control::{Control, Pause};
use crate::metrics::metrics;
use crate::stages::portfolio_key;
use crate::store::Store;

/// What the routes read and steer.
#[derive(Clone)]
pub struct View {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub control: Arc<Control>,
    /// The stages this process runs, as (namespace, stage): readiness wants partitions for
    /// each.
    pub stages: Vec<(String, String)>,
    /// Kafka and store reachability, checked at most once a second.
    pub services: crate::readiness::ServiceChecks,
    /// The console's equity curves, latest fills and rejections, DLQ counts.
    pub console: Console,
}

/// `GET /`: the operator console (docs/operations.md, "Console").
#[get("/")]
async fn console_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(assets::INDEX_HTML)
}

#[get("/console.css")]
async fn console_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(assets::CONSOLE_CSS)
}

#[get("/console.js")]
async fn console_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(assets::CONSOLE_JS)
}

#[get("/favicon.svg")]
async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .body(assets::FAVICON_SVG)
}

/// `GET /console/data`: per broker the equity curve of each strategy, the latest fills and
/// rejections; the records held in each DLQ topic; the symbols of the instruments the
/// daemon knows. Read rule of `/status`.
#[get("/console/data")]
async fn console_data(req: HttpRequest, view: web::Data<View>) -> HttpResponse {
    if let Err(r) = authorize_read(&req, &view) {
        return r;
    }
    let body = serde_json::to_value(&*view.console.book());
    let instruments: serde_json::Map<String, Value> = view
        .settings
        .synthetic
        .instruments
        .iter()
        .map(|i| (i.instrument_token.0.to_string(), json!(i.symbol)))
        .collect();
    match body {
        Ok(mut body) => {
            body["instruments"] = Value::Object(instruments);
            HttpResponse::Ok().json(body)
        }
        Err(e) => HttpResponse::InternalServerError().json(json!({ "error": e.to_string() })),
    }
}

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

use crate::readiness::check;

/// `GET /readyz`: 200 when every check passes, else 503; the body names each check and why.
#[get("/readyz")]
async fn readyz(view: web::Data<View>) -> HttpResponse {
    // Kafka and the store: cached, at most one check in flight (crate::readiness).
    let mut checks: serde_json::Map<String, Value> =
        view.services.current().await.into_iter().collect();
    let workers = view.control.workers();
    let missing: Vec<String> = view
        .stages
        .iter()
        .filter(|(ns, stage)| {
            !workers
                .iter()
                .any(|((n, s, _, _), w)| n == ns && s == stage && w.state != "released")
        })
        .map(|(ns, stage)| format!("{ns}.{stage}"))
        .collect();
    checks.insert(
        "partitions".into(),
        if missing.is_empty() {
            check(true, "every stage holds partitions")
        } else {
            check(
                false,
                format!("no partitions assigned to {}", missing.join(", ")),
            )
        },
    );
    let degraded = view.control.degraded();
    checks.insert(
        "brokers".into(),
        if degraded.is_empty() {
            check(true, "no broker degraded")
        } else {
            let why: Vec<String> = degraded
                .iter()
                .flat_map(|(b, stages)| stages.values().map(move |r| format!("{b}: {r}")))
                .collect();
            check(false, format!("degraded: {}", why.join("; ")))
        },
    );
    let ready = checks.values().all(|c| c["ok"] == true);
    let body = json!({ "ready": ready, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[get("/metrics")]
async fn metrics_route() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics().render())
}

/// `GET /status`: the actor tree (per broker, per stage, per partition: state, restarts,
/// last error, next offset and consumer lag), pauses, trading states and degradations.
#[get("/status")]
async fn status(req: HttpRequest, view: web::Data<View>) -> HttpResponse {
    if let Err(r) = authorize_read(&req, &view) {
        return r;
    }
    let lags = view.control.lags();
    let mut tree: serde_json::Map<String, Value> = serde_json::Map::new();
    for ((ns, stage, topic, partition), w) in view.control.workers() {
        let group = format!("{}.{ns}.{stage}", view.settings.kafka.group_prefix);
        let lag = lags
            .get(&(group.clone(), topic.clone(), partition))
            .copied();
        let broker = tree
            .entry(ns.clone())
            .or_insert_with(|| json!({ "stages": {} }));
        // Truly unreachable (both `expect`s): this tree is built only here, each broker with a
        // `stages` object and each stage with a `partitions` array.
        let stages = broker["stages"].as_object_mut().expect("object");
        let st = stages
            .entry(stage.clone())
            .or_insert_with(|| json!({ "group": group, "partitions": [] }));
        st["partitions"].as_array_mut().expect("array").push(json!({
            "topic": topic,
            "partition": partition,
            "state": w.state,
            "restarts": w.restarts,
            "last_error": w.last_error,
            "next_offset": w.next_offset,
            "lag": lag,
        }));
    }
    let degraded = view.control.degraded();
    let mut brokers = serde_json::Map::new();
    let names = view
        .settings
        .active_brokers
        .iter()
        .map(|b| b.as_str().to_owned())
        .chain(std::iter::once("market".to_owned()));
    for b in names {
        let mut entry = tree.remove(&b).unwrap_or_else(|| json!({ "stages": {} }));
        entry["trading_state"] = json!(view.control.trading_state(&b, None).as_str());
        entry["degraded"] = json!(degraded.get(&b));
        brokers.insert(b, entry);
    }
    let strategies: Vec<Value> = view
        .control
        .trading_states()
        .into_iter()
        .filter(|(_, s, _)| !s.is_empty())
        .map(|(b, s, st)| json!({ "broker": b, "strategy": s, "trading_state": st.as_str() }))
        .collect();
    HttpResponse::Ok().json(json!({
        "brokers": brokers,
        "paused": view.control.pauses(),
        "strategy_trading_states": strategies,
        "disabled_strategies": view.control.disabled_strategies(),
    }))
}

/// `GET /portfolio/{broker}`: the latest PnL snapshot (null before its first fill) of each
/// strategy the daemon started with or a reload added.
#[get("/portfolio/{broker}")]
async fn portfolio(
    req: HttpRequest,
    view: web::Data<View>,
    broker: web::Path<String>,
) -> HttpResponse {
    if let Err(r) = authorize_read(&req, &view) {
        return r;
    }
    let Some(broker) = BrokerName::new(broker.into_inner())
        .ok()
        .filter(|b| view.settings.active_brokers.contains(b))
    else {
        return HttpResponse::NotFound().json(json!({ "error": "no such active broker" }));
    };
    let mut strategies = serde_json::Map::new();
    let reloaded = view.control.live().map(|l| l.current().1);
    let mut all: Vec<&alpha_panda_config::StrategySettings> =
        view.settings.strategies.iter().collect();
    for st in reloaded.iter().flat_map(|s| s.strategies.iter()) {
        if !all.iter().any(|a| a.id == st.id) {
            all.push(st);
        }
    }
    for st in all.into_iter().filter(|s| s.brokers.contains(&broker)) {
        let value = match view.store.get(&portfolio_key(&broker, &st.id)).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or(Value::Null),
            Ok(None) => Value::Null,
            Err(e) => {
                return HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() }));
            }
        };
        strategies.insert(st.id.to_string(), value);
    }
    HttpResponse::Ok().json(json!({ "broker": broker.as_str(), "strategies": strategies }))
}

/// Whether `given` is the secret `expected`. Both are hashed to 32-byte SHA-256 digests
/// first and the digests compared without an early exit: the time taken depends on neither
/// the bytes nor the length of either.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (g, e) = (Sha256::digest(given), Sha256::digest(expected));
    g.iter()
        .zip(e.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The bearer token of a request, or "" without one.
fn bearer(req: &HttpRequest) -> &str {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// The configured admin token, if any.
fn admin_token(view: &View) -> Option<&str> {
    view.settings
        .admin
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
}

/// Lets a read of positions or PnL through, or answers 401 for it: open without a
/// configured token, else the admin token is required.
pub(crate) fn authorize_read(req: &HttpRequest, view: &View) -> Result<(), HttpResponse> {
    match admin_token(view) {
        Some(expected) if !same_secret(bearer(req).as_bytes(), expected.as_bytes()) => {
            Err(HttpResponse::Unauthorized().json(json!({ "error": WRONG_TOKEN })))
        }
        _ => Ok(()),
    }
}

/// The refusal of a request without the right token, as the API words it.
const WRONG_TOKEN: &str = "missing or wrong bearer token";

/// Lets an admin command through, or answers for it: 403 without a configured token, 401
/// without the right one.
fn authorize(req: &HttpRequest, view: &View, action: &str) -> Result<(), HttpResponse> {
    let caller = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let refuse = |code: actix_web::http::StatusCode, why: &str| {
        tracing::warn!(target: "alpha_panda::audit", action, caller, outcome = why, "admin command refused");
        metrics()
            .admin_actions
            .with_label_values(&[action, why])
            .inc();
        HttpResponse::build(code).json(json!({ "error": why }))
    };
    let Some(expected) = admin_token(view) else {
        return Err(refuse(
            actix_web::http::StatusCode::FORBIDDEN,
            "admin commands are disabled: set admin.token",
        ));
    };
    if same_secret(bearer(req).as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(refuse(
            actix_web::http::StatusCode::UNAUTHORIZED,
            WRONG_TOKEN,
        ))
    }
}

/// Logs and counts an admin command that ran.
fn audit(req: &HttpRequest, action: &str, detail: &Value) {
    let caller = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    tracing::info!(target: "alpha_panda::audit", action, caller, detail = %detail, "admin command");
    metrics()
        .admin_actions
        .with_label_values(&[action, "ok"])
        .inc();
}

fn bad_request(why: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": why.into() }))
}

fn unavailable(e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": format!("store: {e}") }))
}

/// A broker the daemon runs, or `market` for the shared strategy stage.
fn known_namespace(view: &View, broker: &str) -> bool {
    broker == "market"
        || view
            .settings
            .active_brokers
            .iter()
            .any(|b| b.as_str() == broker)
}

const STAGES: &[&str] = &["strategy", "risk", "trader", "portfolio"];

fn checked_pause(view: &View, body: Pause) -> Result<Pause, HttpResponse> {
    if !known_namespace(view, &body.broker) {
        return Err(bad_request(format!(
            "broker {:?} is not active here (active: {}; `market` is the strategy stage)",
            body.broker,
            view.settings
                .active_brokers
                .iter()
                .map(|b| b.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if body.stage.is_some() && body.strategy.is_some() {
        return Err(bad_request("give a stage or a strategy, not both"));
    }
    if let Some(s) = &body.stage
        && !STAGES.contains(&s.as_str())
    {
        return Err(bad_request(format!(
            "unknown stage {s:?} (one of {})",
            STAGES.join(", ")
        )));
    }
    if let Some(s) = &body.strategy
        && !known_strategy(view, s)
    {
        return Err(bad_request(format!("unknown strategy {s:?}")));
    }
    Ok(body)
}

#[post("/admin/pause")]
async fn pause(req: HttpRequest, view: web::Data<View>, body: web::Json<Pause>) -> HttpResponse {
    pause_or_resume(req, view, body.into_inner(), true).await
}

#[post("/admin/resume")]
async fn resume(req: HttpRequest, view: web::Data<View>, body: web::Json<Pause>) -> HttpResponse {
    pause_or_resume(req, view, body.into_inner(), false).await
}

async fn pause_or_resume(
    req: HttpRequest,
    view: web::Data<View>,
    body: Pause,
    hold: bool,
) -> HttpResponse {
    note(&req, Some(&body.broker), &json!(body));
    let (action, done) = if hold {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    if let Err(r) = authorize(&req, &view, action) {
        return r;
    }
    let p = match checked_pause(&view, body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = if hold {
        view.control.pause(p.clone()).await
    } else {
        view.control.resume(p.clone()).await
    };
    match result {
        Ok(changed) => {
            audit(&req, action, &json!(p));
            HttpResponse::Ok().json(json!({ done: p, "changed": changed }))
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TradingStateChange {
    broker: String,
    #[serde(default)]
    strategy: Option<String>,
    state: String,
}

#[post("/admin/trading-state")]
async fn trading_state(
    req: HttpRequest,
    view: web::Data<View>,
    body: web::Json<TradingStateChange>,
) -> HttpResponse {
    let b = body.into_inner();
    note(
        &req,
        Some(&b.broker),
        &json!({ "broker": b.broker, "strategy": b.strategy, "state": b.state }),
    );
    if let Err(r) = authorize(&req, &view, "trading-state") {
        return r;
    }
    if b.broker == "market" || !known_namespace(&view, &b.broker) {
        return bad_request(format!("broker {:?} is not active here", b.broker));
    }
    let state = match b.state.parse::<TradingState>() {
        Ok(s) => s,
        Err(e) => return bad_request(e.to_string()),
    };
    if let Some(s) = &b.strategy
        && !known_strategy(&view, s)
    {
        return bad_request(format!("unknown strategy {s:?}"));
    }
    let by = fingerprint(bearer(&req));
    match view
        .control
        .set_trading_state_by(&b.broker, b.strategy.as_deref(), state, &by, "admin API")
        .await
    {
        Ok(()) => {
            let detail =
                json!({ "broker": b.broker, "strategy": b.strategy, "state": state.as_str() });
            audit(&req, "trading-state", &detail);
            HttpResponse::Ok().json(detail)
        }
        Err(e) => unavailable(e),
    }
}

#[post("/admin/strategies/{id}/{action}")]
async fn strategy_switch(
    req: HttpRequest,
    view: web::Data<View>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (id, action) = path.into_inner();
    note(&req, None, &json!({ "strategy": id, "action": action }));
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        other => {
            return HttpResponse::NotFound()
                .json(json!({ "error": format!("unknown action {other:?}: enable or disable") }));
        }
    };
    if let Err(r) = authorize(&req, &view, &action) {
        return r;
    }
    if !known_strategy(&view, &id) {
        return HttpResponse::NotFound()
            .json(json!({ "error": format!("unknown strategy {id:?}") }));
    }
    match view.control.set_strategy_enabled(&id, enabled).await {
        Ok(()) => {
            let detail = json!({ "strategy": id, "enabled": enabled });
            audit(&req, &action, &detail);
            HttpResponse::Ok().json(detail)
        }
        Err(e) => unavailable(e),
    }
}

/// Whether `id` is a running strategy (of the reloaded set once there is one).
fn known_strategy(view: &View, id: &str) -> bool {
    view.control
        .knows_strategy(id, view.settings.strategies.iter().map(|c| c.id.as_str()))
}

/// What a handler tells the audit about its call: the broker it names and its body.
#[derive(Debug, Clone)]
struct AuditNote {
    broker: Option<String>,
    summary: String,
}

fn note(req: &HttpRequest, broker: Option<&str>, body: &Value) {
    req.extensions_mut().insert(AuditNote {
        broker: broker.filter(|b| *b != "market").map(str::to_owned),
        summary: summary(&body.to_string()),
    });
}

/// The outcome of an admin call as `admin_audit` keeps it: the status, and the answer's
/// `error` (with its `reasons`) when there is one.
fn outcome(code: actix_web::http::StatusCode, body: &[u8]) -> String {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut out = code.as_u16().to_string();
    if let Some(e) = answer.get("error").and_then(Value::as_str) {
        out.push(' ');
        out.push_str(e);
    }
    if let Some(reasons) = answer.get("reasons").and_then(Value::as_array) {
        for r in reasons.iter().filter_map(Value::as_str) {
            out.push_str("; ");
            out.push_str(r);
        }
    }
    out
}

#[post("/admin/strategies/reload")]
async fn reload_strategies(req: HttpRequest, view: web::Data<View>) -> HttpResponse {
    note(&req, None, &Value::Null);
    if let Err(r) = authorize(&req, &view, "reload") {
        return r;
    }
    let Some(reloader) = view.control.reloader() else {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "error": "this process cannot reload its strategies" }));
    };
    match web::block(move || reloader()).await {
        Ok(Ok(applied)) => {
            audit(&req, "reload", &json!(applied));
            HttpResponse::Ok().json(json!({ "reloaded": applied }))
        }
        Ok(Err(refused)) => {
            metrics()
                .admin_actions
                .with_label_values(&["reload", "refused"])
                .inc();
            HttpResponse::UnprocessableEntity().json(json!({
                "error": format!("strategies from {} refused; the running set is unchanged", refused.source),
                "source": refused.source,
                "reasons": refused.reasons,
            }))
        }
        Err(e) => HttpResponse::InternalServerError()
            .json(json!({ "error": format!("reload did not run: {e}") })),
    }
}

/// Who made an admin call, from where, and what it was: read before the call runs.
struct Caller {
    who: String,
    from: String,
    what: String,
}

impl Caller {
    /// The caller of an `/admin/` request; `None` for any other path.
    fn of(req: &actix_web::dev::ServiceRequest) -> Option<Self> {
        req.path().starts_with("/admin/").then(|| Caller {
            who: fingerprint(bearer(req.request())),
            from: req
                .peer_addr()
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
            what: format!("{} {}", req.method(), req.path()),
        })
    }
}

/// Reports an answered `/admin/` call (see the module's contract) and passes the answer on.
async fn audited<B>(
    control: Arc<Control>,
    caller: Option<Caller>,
    res: actix_web::dev::ServiceResponse<B>,
) -> Result<actix_web::dev::ServiceResponse, actix_web::Error>
where
    B: actix_web::body::MessageBody + 'static,
{
    let Some(caller) = caller else {
        return Ok(res.map_into_boxed_body());
    };
    let code = res.status();
    let (request, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let note = request.extensions().get::<AuditNote>().cloned();
    control.record(AuditEvent::Admin(AdminCall {
        who: caller.who,
        from: caller.from,
        what: caller.what,
        broker: note.as_ref().and_then(|n| n.broker.clone()),
        summary: note.map(|n| n.summary).unwrap_or_default(),
        outcome: outcome(code, &bytes),
        at: std::time::SystemTime::now(),
    }));
    Ok(actix_web::dev::ServiceResponse::new(
        request,
        head.set_body(bytes).map_into_boxed_body(),
    ))
}

/// Every route, its security headers and its error handling, on `view`.
pub fn routes(cfg: &mut web::ServiceConfig, view: View) {
    let control = view.control.clone();
    cfg.service(
        web::scope("")
            .wrap_fn(move |req, srv| {
                let control = control.clone();
                let caller = Caller::of(&req);
                // The call starts here, so the future borrows no service.
                let call = actix_web::dev::Service::call(srv, req);
                async move { audited(control, caller, call.await?).await }
            })
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("Content-Security-Policy", assets::CONTENT_SECURITY_POLICY))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "no-referrer"))
                    .add(("Cache-Control", "no-store")),
            )
            .app_data(web::Data::new(view))
            .app_data(web::JsonConfig::default().error_handler(|e, _| {
                let why = e.to_string();
                actix_web::error::InternalError::from_response(
                    e,
                    HttpResponse::BadRequest().json(json!({ "error": why })),
                )
                .into()
            }))
            .service(console_page)
            .service(console_css)
            .service(console_js)
            .service(console_data)
            .service(favicon)
            .service(healthz)
            .service(readyz)
            .service(metrics_route)
            .service(status)
            .service(portfolio)
            .service(pause)
            .service(resume)
            .service(trading_state)
            .service(reload_strategies)
            .service(strategy_switch),
    );
}

/// Binds the server; it runs once awaited (or spawned) on an actix system.
pub fn server(listen: SocketAddr, view: View) -> std::io::Result<Server> {
    Ok(
        HttpServer::new(move || App::new().configure(|c| routes(c, view.clone())))
            .workers(1)
            .disable_signals()
            .bind(listen)?
            .run(),
    )
}

#[cfg(test)]
mod tests {
    use super::{outcome, same_secret};
    use actix_web::http::StatusCode;

    #[test]
    fn an_outcome_is_the_status_then_the_answer_s_error_and_reasons() {
        assert_eq!(outcome(StatusCode::OK, b"{\"reloaded\":{}}"), "200");
        assert_eq!(
            outcome(
                StatusCode::UNAUTHORIZED,
                b"{\"error\":\"missing or wrong bearer token\"}"
            ),
            "401 missing or wrong bearer token"
        );
        assert_eq!(
            outcome(
                StatusCode::UNPROCESSABLE_ENTITY,
                b"{\"error\":\"refused\",\"reasons\":[\"a\",\"b\"]}"
            ),
            "422 refused; a; b"
        );
        assert_eq!(outcome(StatusCode::BAD_REQUEST, b"not json"), "400");
    }

    use proptest::prelude::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3crets", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }

    proptest! {
        #[test]
        fn any_two_byte_strings_match_exactly_when_they_are_equal(
            a in proptest::collection::vec(any::<u8>(), 0..64),
            b in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assert_eq!(same_secret(&a, &b), a == b);
            prop_assert!(same_secret(&a, &a));
        }
    }
}
