//! The operations HTTP server: liveness and, for now, positions per broker. Readiness,
//! metrics, status and admin routes come with the operations surface.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, get, web};
use alpha_panda_config::Settings;
use alpha_panda_core::BrokerName;

use crate::stages::portfolio_key;
use crate::store::Store;

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// What the read routes need.
#[derive(Clone)]
pub struct View {
    pub settings: Arc<Settings>,
    pub store: Store,
}

/// `GET /portfolio/{broker}`: each configured strategy's latest PnL snapshot (null before
/// its first fill).
#[get("/portfolio/{broker}")]
async fn portfolio(view: web::Data<View>, broker: web::Path<String>) -> HttpResponse {
    let Some(broker) = BrokerName::new(broker.into_inner())
        .ok()
        .filter(|b| view.settings.active_brokers.contains(b))
    else {
        return HttpResponse::NotFound()
            .content_type("application/json")
            .body(r#"{"error":"no such active broker"}"#);
    };
    let mut strategies = serde_json::Map::new();
    for st in view
        .settings
        .strategies
        .iter()
        .filter(|s| s.brokers.contains(&broker))
    {
        let value = match view.store.get(&portfolio_key(&broker, &st.id)).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
            Ok(None) => serde_json::Value::Null,
            Err(e) => {
                return HttpResponse::ServiceUnavailable()
                    .json(serde_json::json!({ "error": e.to_string() }));
            }
        };
        strategies.insert(st.id.to_string(), value);
    }
    HttpResponse::Ok()
        .json(serde_json::json!({ "broker": broker.as_str(), "strategies": strategies }))
}

/// Binds the server; it runs once awaited (or spawned) on an actix system.
pub fn server(listen: SocketAddr, view: Option<View>) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        let app = App::new().service(healthz);
        match &view {
            Some(v) => app.app_data(web::Data::new(v.clone())).service(portfolio),
            None => app,
        }
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?
    .run())
}
