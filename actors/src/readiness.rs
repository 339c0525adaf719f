//! Readiness of the services the daemon needs (Kafka, the store), as `/readyz` reports it.
//!
//! A probe must not be a way to load the process: checks run at most once per
//! [`FRESH_FOR`], one at a time, whatever the request rate; requests in between read the
//! cached result. The Kafka check reuses one metadata client for the life of the process
//! instead of building one per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};

use crate::store::Store;

/// How long a check's result is served before the next request checks again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One check's outcome: `{ "ok": bool, "reason": text }`.
pub fn check(ok: bool, reason: impl Into<String>) -> Value {
    json!({ "ok": ok, "reason": reason.into() })
}

/// Named check outcomes, in order.
pub type Checks = Vec<(String, Value)>;

type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Checks> + Send>> + Send + Sync>;

/// Cached results of a probe that runs at most once per [`FRESH_FOR`], one run at a time.
#[derive(Clone)]
pub struct ServiceChecks {
    probe: Probe,
    cached: Arc<tokio::sync::Mutex<Option<(Instant, Checks)>>>,
}

impl ServiceChecks {
    /// Checks of Kafka (a metadata request on one long-lived client; the in-process
    /// transport when `servers` is absent) and of the store (a ping).
    pub fn services(servers: Option<String>, client_id: &str, store: Store) -> Self {
        let kafka: Option<Arc<(String, Result<BaseConsumer, String>)>> = servers.map(|servers| {
            let client = crate::kafka::client_config(&servers, client_id)
                .create::<BaseConsumer>()
                .map_err(|e| format!("cannot create a Kafka client for {servers}: {e}"));
            Arc::new((servers, client))
        });
        Self::new(move || {
            let (kafka, store) = (kafka.clone(), store.clone());
            async move {
                let kafka_check = match kafka {
                    None => check(true, "in-process transport"),
                    Some(k) => {
                        let result = tokio::task::spawn_blocking(move || {
                            let (servers, client) = &*k;
                            let client = client.as_ref().map_err(Clone::clone)?;
                            client
                                .fetch_metadata(None, CHECK_TIMEOUT)
                                .map(|_| format!("{servers} answers"))
                                .map_err(|e| {
                                    format!(
                                        "Kafka at {servers} did not answer a metadata request: {e}"
                                    )
                                })
                        })
                        .await;
                        match result {
                            Ok(Ok(reason)) => check(true, reason),
                            Ok(Err(reason)) => check(false, reason),
                            Err(e) => check(false, e.to_string()),
                        }
                    }
                };
                let store_check = match tokio::time::timeout(CHECK_TIMEOUT, store.ping()).await {
                    Ok(Ok(())) => check(true, format!("{} store answers", store.kind())),
                    Ok(Err(e)) => check(false, e.to_string()),
                    Err(_) => check(false, "the store did not answer within 2 s"),
                };
                vec![
                    ("kafka".to_owned(), kafka_check),
                    ("redis".to_owned(), store_check),
                ]
            }
        })
    }

    pub fn new<F, Fut>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Checks> + Send + 'static,
    {
        Self {
            probe: Arc::new(move || Box::pin(probe())),
            cached: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The latest results, checking again first if they are older than [`FRESH_FOR`].
    /// Concurrent callers wait for the one check in flight and share its result.
    pub async fn current(&self) -> Checks {
        let mut cached = self.cached.lock().await;
        if let Some((at, results)) = &*cached
            && at.elapsed() < FRESH_FOR
        {
            return results.clone();
        }
        let results = (self.probe)().await;
        *cached = Some((Instant::now(), results.clone()));
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_burst_of_probes_runs_one_check_and_a_later_one_checks_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let checks = ServiceChecks::new({
            let (runs, in_flight, most) = (runs.clone(), in_flight.clone(), most_in_flight.clone());
            move || {
                let (runs, in_flight, most) = (runs.clone(), in_flight.clone(), most.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    runs.fetch_add(1, Ordering::SeqCst);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    vec![("kafka".to_owned(), check(true, "answers"))]
                }
            }
        });
        let burst: Vec<_> = (0..100)
            .map(|_| {
                let c = checks.clone();
                tokio::spawn(async move { c.current().await })
            })
            .collect();
        for r in burst {
            assert_eq!(r.await.unwrap()[0].1["ok"], true);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "100 probes, one check");
        assert_eq!(most_in_flight.load(Ordering::SeqCst), 1);
        tokio::time::sleep(FRESH_FOR + Duration::from_millis(50)).await;
        checks.current().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "stale results are checked again"
        );
    }
}
