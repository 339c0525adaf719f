//! The operations HTTP server. This is its first slice: liveness. Readiness, metrics,
//! status, portfolio and admin routes come with the operations surface.

use std::net::SocketAddr;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, get};

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Binds the server; it runs once awaited (or spawned) on an actix system.
pub fn server(listen: SocketAddr) -> std::io::Result<Server> {
    Ok(HttpServer::new(|| App::new().service(healthz))
        .workers(1)
        .disable_signals()
        .bind(listen)?
        .run())
}
