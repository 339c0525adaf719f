//! The operator console (docs/operations.md, "Console"): a single page served by the
//! daemon's HTTP server, and the bounded data it shows besides `/status` and
//! `/portfolio/{broker}`.
//!
//! - `book`: what is kept (equity curves, latest fills and rejections, DLQ counts), pure;
//! - `tail`: a reader that follows the topics behind it on either transport, outside every
//!   consumer group's commits (it commits nothing, marks nothing, and is not paused by an
//!   operator's pause, so the page keeps showing what the stages publish);
//! - `assets`: the page, its style sheet and script, embedded in the binary.

pub mod assets;
pub mod book;
pub mod tail;

use std::sync::{Arc, Mutex, MutexGuard};

pub use book::{ConsoleBook, Limits};

/// The console's data, shared between its reader and the HTTP server. Cheap to clone.
#[derive(Clone, Default)]
pub struct Console {
    book: Arc<Mutex<ConsoleBook>>,
}

impl Console {
    pub fn new(limits: Limits) -> Self {
        Self {
            book: Arc::new(Mutex::new(ConsoleBook::new(limits))),
        }
    }

    /// The book, locked (a panic while it was held leaves it usable: it is display data).
    pub fn book(&self) -> MutexGuard<'_, ConsoleBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}
