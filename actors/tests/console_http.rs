//! The read rule and the console's routes, without services (issue 13's defect, issue 14):
//! with an admin token set, `/status`, `/portfolio/{broker}` and `/console/data` need it
//! (401 in the API's words otherwise) while `/healthz`, `/metrics` and the page's assets
//! stay open; without a token they are open; every answer carries a strict
//! Content-Security-Policy; the console's data route answers what its book holds.

use std::sync::Arc;

use actix_web::test::{TestRequest, call_service, init_service, read_body};
use actix_web::{App, dev::ServiceResponse};
use alpha_panda_actors::console::Console;
use alpha_panda_actors::control::Control;
use alpha_panda_actors::http::{View, routes};
use alpha_panda_actors::store::{MemoryStore, Store};
use alpha_panda_config::{Settings, load};
use alpha_panda_core::EventEnvelope;

const TOKEN: &str = "console-http-token-0123456789";

fn view(token: Option<&str>) -> View {
    let env: Vec<(String, String)> = token
        .map(|t| vec![("ALPHA_PANDA__ADMIN__TOKEN".to_owned(), t.to_owned())])
        .unwrap_or_default();
    let settings: Settings = load(None, env).unwrap();
    let store = Store::Memory(MemoryStore::default());
    let brokers = settings
        .active_brokers
        .iter()
        .map(|b| b.as_str().to_owned())
        .collect();
    View {
        services: alpha_panda_actors::readiness::ServiceChecks::services(
            None,
            "console-test",
            store.clone(),
        ),
        settings: Arc::new(settings),
        control: Arc::new(Control::new(store.clone(), brokers)),
        store,
        stages: vec![],
        console: Console::default(),
    }
}

async fn get(view: &View, path: &str, token: Option<&str>) -> ServiceResponse {
    let app = init_service(App::new().configure(|c| routes(c, view.clone()))).await;
    let mut req = TestRequest::get().uri(path);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    call_service(&app, req.to_request()).await
}

#[actix_web::test]
async fn with_a_token_set_positions_status_and_console_data_need_it_and_probes_stay_open() {
    let v = view(Some(TOKEN));
    for path in ["/status", "/portfolio/paper", "/console/data"] {
        for wrong in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
            let r = get(&v, path, wrong).await;
            assert_eq!(r.status(), 401, "{path} with {wrong:?}");
            let body = read_body(r).await;
            assert_eq!(
                body, r#"{"error":"missing or wrong bearer token"}"#,
                "{path}"
            );
        }
        assert_eq!(get(&v, path, Some(TOKEN)).await.status(), 200, "{path}");
    }
    for path in [
        "/healthz",
        "/metrics",
        "/",
        "/console.js",
        "/console.css",
        "/favicon.svg",
    ] {
        assert_eq!(get(&v, path, None).await.status(), 200, "{path} stays open");
    }
}

#[actix_web::test]
async fn without_a_token_the_read_routes_are_open_and_admin_commands_are_refused() {
    let v = view(None);
    for path in ["/status", "/portfolio/paper", "/console/data"] {
        assert_eq!(get(&v, path, None).await.status(), 200, "{path}");
    }
    let app = init_service(App::new().configure(|c| routes(c, v.clone()))).await;
    let r = call_service(
        &app,
        TestRequest::post()
            .uri("/admin/pause")
            .set_json(serde_json::json!({ "broker": "paper" }))
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[actix_web::test]
async fn the_page_and_its_assets_come_with_a_strict_content_security_policy() {
    let v = view(Some(TOKEN));
    for (path, kind) in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
        ("/status", "application/json"),
    ] {
        let r = get(&v, path, Some(TOKEN)).await;
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{path}: no {name} header"))
                .to_owned()
        };
        let csp = h("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("x-frame-options"), "DENY");
        let ct = h("content-type");
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
    let page = String::from_utf8(read_body(get(&v, "/", None).await).await.to_vec()).unwrap();
    assert!(page.contains(r#"<script src="/console.js" defer></script>"#));
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline script or style"
    );
}

#[actix_web::test]
async fn the_console_data_route_answers_what_its_book_holds() {
    let v = view(None);
    let fill =
        EventEnvelope::decode(include_bytes!("../../docs/events/order_filled.json")).unwrap();
    v.console.book().apply("paper", &fill);
    v.console.book().set_dlq_count("paper.orders.filled.dlq", 3);
    let r = get(&v, "/console/data", None).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&read_body(r).await).unwrap();
    assert_eq!(
        body["brokers"]["paper"]["fills"].as_array().unwrap().len(),
        1
    );
    assert_eq!(body["dlq"]["paper.orders.filled.dlq"], 3);
    assert_eq!(body["instruments"]["738561"], "RELIANCE");
}
