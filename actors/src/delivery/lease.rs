//! One active member per broker stage across daemons: a lease held through Kafka's group
//! membership.
//!
//! A broker's risk, trader and portfolio keep state that spans their input partitions (cash
//! and holdings per strategy, resting orders, books). Split between two daemons, each would
//! decide on half the picture: two daemons sharing the groups once produced 462 fills where
//! one produced 270. So these stages run on **one daemon at a time**; the others stand by
//! and take over, rebuilding the state from the log, when it dies or leaves.
//!
//! The lease: every daemon joins the group `{group}.lease` on the stage's first input topic
//! and reads nothing from it (its partitions stay paused). The member assigned partition 0
//! holds the lease. On winning it, the member waits until the stage's own group has no
//! member left (a former holder that stalled or died is out only when its session expired:
//! this is the fence), then starts the stage's consumer, which gets every partition. On
//! losing it, the member stops the stage's consumer (finishing the in-flight record,
//! committing, flushing) before anything else.
//!
//! Each time the lease is won the stage starts from a fresh state (`make`): what the stage
//! knew when it last held the lease is stale, since another daemon went on meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};

use super::kafka::{ConsumerHandle, ConsumerSpec};

/// Tells the runner whether this member holds the lease.
struct LeaseContext {
    held: Arc<AtomicBool>,
    stage: String,
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance
            && holds(tpl)
        {
            self.held.store(false, Ordering::Release);
            tracing::info!(stage = %self.stage, "lease lost");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // The lease consumer reads nothing.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(stage = %self.stage, error = %e, "cannot pause the lease partitions");
            }
            if holds(tpl) {
                self.held.store(true, Ordering::Release);
                tracing::info!(stage = %self.stage, "lease won");
            }
        }
    }
}

fn holds(tpl: &TopicPartitionList) -> bool {
    tpl.elements().iter().any(|e| e.partition() == 0)
}

/// A stage run under a lease.
pub struct LeasedStage {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
    held: Arc<AtomicBool>,
}

impl LeasedStage {
    /// Whether this member holds the lease now.
    pub fn active(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Stops the stage (if running) and leaves the lease group.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeasedStage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Runs the stage that `make` describes while this member holds its lease. `make` is
/// called at each win, for a stage with fresh state.
pub fn run(make: Arc<dyn Fn() -> ConsumerSpec + Send + Sync>) -> Result<LeasedStage, KafkaError> {
    let first = make();
    let group = first.policy.group.clone();
    let stage = format!("{}/{}", first.policy.namespace, first.policy.stage);
    let lease_topic = first
        .topics
        .first()
        .map(ToString::to_string)
        .ok_or_else(|| KafkaError::Subscription(format!("{stage} reads no topic")))?;
    let held = Arc::new(AtomicBool::new(false));
    let mut config =
        crate::kafka::consumer_config(&first.servers, &first.client_id, &format!("{group}.lease"));
    config.set(
        "session.timeout.ms",
        first.policy.session_timeout.as_millis().to_string(),
    );
    if let Some(id) = &first.policy.instance_id {
        config.set("group.instance.id", id);
    }
    let join = {
        let (held, stage) = (held.clone(), stage.clone());
        move || -> Result<BaseConsumer<LeaseContext>, KafkaError> {
            let lease: BaseConsumer<LeaseContext> = config.create_with_context(LeaseContext {
                held: held.clone(),
                stage: stage.clone(),
            })?;
            lease.subscribe(&[lease_topic.as_str()])?;
            Ok(lease)
        }
    };
    let mut lease = join()?;
    // Reads the stage group's members, for the fence.
    let probe: BaseConsumer =
        crate::kafka::client_config(&first.servers, &first.client_id).create()?;
    let session = first.policy.session_timeout;
    let instance = first.policy.instance_id.clone();
    drop(first);

    let stop = Arc::new(AtomicBool::new(false));
    // The lease consumer is polled on its own thread: rebalance callbacks run inside poll.
    {
        let (stop, held, name) = (stop.clone(), held.clone(), stage.clone());
        std::thread::Builder::new()
            .name(format!("lease-{stage}"))
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let Some(Err(KafkaError::MessageConsumptionFatal(code))) =
                        lease.poll(Duration::from_millis(100))
                    else {
                        continue;
                    };
                    // Fenced by its own rejoin after a session timeout (see
                    // `kafka::poll_loop`): this member no longer holds anything, and a new
                    // lease consumer joins under the same instance id.
                    held.store(false, Ordering::Release);
                    tracing::error!(stage = %name, error = %code, "the lease consumer failed for good; lease lost, joining again");
                    match join() {
                        Ok(fresh) => drop(std::mem::replace(&mut lease, fresh)),
                        Err(e) => {
                            tracing::error!(stage = %name, error = %e, "cannot replace the lease consumer; trying again");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
                lease.unsubscribe();
            })
            .map_err(|e| KafkaError::Subscription(format!("cannot start the lease thread: {e}")))?;
    }
    let task = {
        let (stop, held) = (stop.clone(), held.clone());
        tokio::spawn(async move {
            let probe = Arc::new(probe);
            let mut running: Option<ConsumerHandle> = None;
            loop {
                let stopping = stop.load(Ordering::Acquire);
                let holds = held.load(Ordering::Acquire) && !stopping;
                match (&running, holds) {
                    (Some(_), false) => {
                        if let Some(member) = running.take() {
                            tracing::info!(%stage, "stopping the stage: the lease is gone");
                            member.shutdown().await;
                        }
                    }
                    (None, true)
                        if fence(&probe, &group, instance.as_deref(), session, &held, &stop)
                            .await =>
                    {
                        match super::kafka::start(make()) {
                            Ok(member) => {
                                tracing::info!(%stage, "the stage is active on this member");
                                running = Some(member);
                            }
                            Err(e) => {
                                tracing::error!(%stage, error = %e, "cannot start the stage; trying again");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                    _ => {}
                }
                if stopping && running.is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    Ok(LeasedStage {
        stop,
        task: Some(task),
        held,
    })
}

/// Waits until no member is left in the stage's group, so a former holder is out before
/// this one starts. A static member with this daemon's own `instance` id is this daemon's
/// previous run (it was killed): joining with the same id fences it out at once, so it is
/// not waited for. False if the lease was lost (or the process stops) meanwhile.
async fn fence(
    probe: &Arc<BaseConsumer>,
    group: &str,
    instance: Option<&str>,
    session: Duration,
    held: &AtomicBool,
    stop: &AtomicBool,
) -> bool {
    let started = std::time::Instant::now();
    let (mut logged, mut warned) = (false, false);
    loop {
        if !held.load(Ordering::Acquire) || stop.load(Ordering::Acquire) {
            return false;
        }
        let (probe, name) = (probe.clone(), group.to_owned());
        // Kafka names a static member `{group.instance.id}-{uuid}`.
        let own = instance.map(|i| format!("{i}-"));
        let members = tokio::task::spawn_blocking(move || {
            probe
                .fetch_group_list(Some(&name), Duration::from_secs(5))
                .map(|list| {
                    list.groups()
                        .iter()
                        .flat_map(|g| g.members())
                        .filter(|m| own.as_deref().is_none_or(|own| !m.id().starts_with(own)))
                        .count()
                })
        })
        .await;
        match members {
            Ok(Ok(0)) => return true,
            Ok(Ok(n)) => {
                if !logged {
                    logged = true;
                    tracing::info!(
                        group,
                        members = n,
                        "waiting for the former holder of the lease to leave the stage's group"
                    );
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(group, error = %e, "cannot read the stage group's members")
            }
            Err(e) => tracing::warn!(group, error = %e, "group probe failed"),
        }
        if started.elapsed() > session * 3 && !warned {
            warned = true;
            tracing::warn!(
                group,
                "the stage's group still has members after three session timeouts"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
