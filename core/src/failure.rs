//! Failure classes (DESIGN §3.5): the class of an error decides what the runtime does with
//! the record that caused it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure happened, and therefore what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Timeout, broker briefly unavailable, HTTP 429/5xx: retry in place with exponential
    /// backoff and jitter, a bounded number of times, then dead-letter.
    Transient,
    /// Undecodable record, schema violation, a record that panics a handler repeatedly:
    /// straight to `{topic}.dlq`, commit, continue.
    Poison,
    /// Risk rejection, broker refuses the order: a domain event (`signals.rejected`,
    /// `orders.failed`), commit.
    Business,
    /// Redis/Postgres/Kafka connection lost: the actor stops without committing and its
    /// supervisor restarts it; the record is redelivered.
    Infrastructure,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Poison => "poison",
            FailureClass::Business => "business",
            FailureClass::Infrastructure => "infrastructure",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its failure class. Every error a stage can return implements it.
pub trait Classify {
    fn class(&self) -> FailureClass;
}
