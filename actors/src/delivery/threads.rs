//! The threads a Kafka consumer's partition workers and stage actors run on
//! (`delivery.threads`, default one per core): partition `p` of every stage runs on thread
//! `p mod threads`, so a stage's partitions spread over the cores instead of sharing one.
//!
//! A whole-stage checkpointed unit runs where its first assigned partition puts it. The
//! in-process transport (the embedded default) keeps every member on the arbiter it was
//! started from.

use std::sync::Arc;

use actix_rt::{Arbiter, ArbiterHandle};

/// Where partition workers run: a shared, cheap-to-clone list of arbiter handles.
#[derive(Clone)]
pub struct Arbiters(Arc<[ArbiterHandle]>);

impl Arbiters {
    /// Everything on the calling arbiter (tests, tools, the in-process transport).
    pub fn current() -> Self {
        Self(Arc::from(vec![Arbiter::current()]))
    }

    /// The arbiter partition `partition` runs on.
    pub fn for_partition(&self, partition: i32) -> &ArbiterHandle {
        // `rem_euclid` of a positive length is in 0..len.
        &self.0[partition.rem_euclid(self.0.len() as i32) as usize]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The daemon's worker threads; stopped and joined by [`WorkerThreads::stop`].
pub struct WorkerThreads {
    arbiters: Vec<Arbiter>,
    handles: Arbiters,
}

impl WorkerThreads {
    /// Starts `n` arbiter threads (at least one). Must be called inside an actix system.
    pub fn start(n: usize) -> Self {
        let arbiters: Vec<Arbiter> = (0..n.max(1)).map(|_| Arbiter::new()).collect();
        let handles = Arbiters(arbiters.iter().map(Arbiter::handle).collect());
        Self { arbiters, handles }
    }

    pub fn arbiters(&self) -> Arbiters {
        self.handles.clone()
    }

    /// Stops every thread once what it runs has ended, and waits for them.
    pub fn stop(self) {
        for a in &self.arbiters {
            a.stop();
        }
        for a in self.arbiters {
            let _ = a.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn partitions_spread_over_the_threads_round_robin() {
        let threads = WorkerThreads::start(2);
        let a = threads.arbiters();
        let id = |h: &ArbiterHandle| {
            let (tx, rx) = std::sync::mpsc::channel();
            h.spawn_fn(move || {
                let _ = tx.send(std::thread::current().id());
            });
            rx.recv().unwrap()
        };
        assert_eq!(a.len(), 2);
        assert_eq!(id(a.for_partition(0)), id(a.for_partition(2)));
        assert_eq!(id(a.for_partition(1)), id(a.for_partition(5)));
        assert_ne!(id(a.for_partition(0)), id(a.for_partition(1)));
        assert_ne!(id(a.for_partition(0)), std::thread::current().id());
        threads.stop();
    }
}
