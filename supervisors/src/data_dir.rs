//! The embedded default's data directory (`data_dir`): opening it at start gives the
//! in-process bus and the memory store as they were when the last run stopped, both
//! journalling every further change into `DATA_DIR/transport.sqlite`
//! (`alpha_panda_db::embedded`). Only the daemon on the in-process transport without
//! `--ephemeral` opens it; a backtest never does. Opening it takes its lock
//! (`crate::data_dir_lock`): one daemon per data directory.

use std::path::Path;
use std::sync::Arc;

use alpha_panda_actors::delivery::inprocess::InProcessBus;
use alpha_panda_actors::journal::Restored;
use alpha_panda_actors::store::MemoryStore;
use alpha_panda_db::embedded::SqliteJournal;
use anyhow::Context;

use crate::data_dir_lock::DataDirLock;

/// An opened data directory, before the bus and the store are made from it.
pub struct DataDir {
    journal: Arc<SqliteJournal>,
    restored: Restored,
    lock: DataDirLock,
}

/// Opens (creating and migrating) the data directory and reads back what it holds.
pub fn open(dir: &Path) -> anyhow::Result<DataDir> {
    let lock = DataDirLock::acquire(dir)?;
    let (journal, restored) = SqliteJournal::open(dir)
        .with_context(|| format!("opening data_dir = {}", dir.display()))?;
    let records: usize = restored
        .topics
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|(_, records)| records.len()))
        .sum();
    tracing::info!(
        file = %journal.path().display(),
        records,
        values = restored.values.len(),
        marks = restored.marks.len(),
        "data directory opened"
    );
    Ok(DataDir {
        journal,
        restored,
        lock,
    })
}

impl DataDir {
    /// The in-process bus with the logs and committed offsets of the last run.
    pub fn bus(&self) -> InProcessBus {
        InProcessBus::journalled(self.journal.clone(), &self.restored)
    }

    /// The memory store with the checkpoints, marks, watermarks and values of the last run.
    pub fn store(&self) -> MemoryStore {
        MemoryStore::journalled(self.journal.clone(), &self.restored)
    }

    /// Drops what was read back (the bus and the store hold their own copies now); the
    /// lock must be kept for as long as the daemon runs.
    pub fn into_journal(self) -> (Arc<SqliteJournal>, DataDirLock) {
        (self.journal, self.lock)
    }
}
