//! `alpha-panda run`: the long-lived daemon.
//!
//! What runs today: settings are loaded and checked, the operations HTTP server serves
//! `/healthz`, and SIGTERM/SIGINT stop the process with status 0. The trading pipeline
//! (feed, strategies, risk, trader, portfolio) is assembled here as its stages land.

use alpha_panda_config::{Feed, Settings};
use anyhow::Context;

pub fn run(settings: Settings) -> anyhow::Result<()> {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let transport = match &settings.kafka.bootstrap_servers {
            Some(servers) => format!("kafka at {servers}"),
            None => "in-process".to_owned(),
        };
        let store = if settings.redis.url.is_some() {
            "redis"
        } else {
            "in-memory"
        };
        let feed = match &settings.feed {
            Feed::Synthetic => "synthetic".to_owned(),
            Feed::Replay { file, .. } => format!("replay {}", file.display()),
            Feed::Kite => "kite".to_owned(),
            Feed::None => "none".to_owned(),
        };
        let brokers: Vec<&str> = settings.active_brokers.iter().map(|b| b.as_str()).collect();
        tracing::info!(
            transport = %transport,
            store,
            feed = %feed,
            brokers = ?brokers,
            http = %settings.http.listen,
            "alpha-panda starting"
        );
        let server = alpha_panda_actors::http::server(settings.http.listen)
            .with_context(|| format!("cannot listen on http.listen = {}", settings.http.listen))?;
        let handle = server.handle();
        let server_task = actix_rt::spawn(server);
        shutdown_signal().await?;
        tracing::info!("shutdown requested; stopping");
        handle.stop(true).await;
        let _ = server_task.await;
        tracing::info!("alpha-panda stopped");
        Ok(())
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
