//! What the daemon reports for the record: every admin call (who, from where, what, when,
//! the outcome) and every change of a broker's or strategy's trading state. The daemon
//! writes them to the `admin_audit` and `trading_state_changes` tables
//! (`alpha_panda_db::audit`); this module only hands them over.
//!
//! Contract:
//! - [`AuditSink::record`] never blocks: it puts the event on a bounded channel read by a
//!   thread of its own (the database writer). When the channel is full the event is logged
//!   (target `alpha_panda::audit`) and counted as dropped, never waited for.
//! - The log line of every event is written whether or not a database is configured.
//! - A caller is named by the SHA-256 fingerprint of the bearer token it presented
//!   ([`fingerprint`]), never the token; without a token it is `anonymous`.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// An admin call as it is kept in `admin_audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCall {
    /// [`fingerprint`] of the bearer token, or `anonymous`; `signal` for SIGHUP.
    pub who: String,
    /// The peer address, or `local` for a signal.
    pub from: String,
    /// Method and path, e.g. `POST /admin/pause`, or `SIGHUP`.
    pub what: String,
    /// The broker the call names; `None` for a call that concerns every broker (kept in
    /// each active broker's table).
    pub broker: Option<String>,
    /// A summary of the request body (at most [`MAX_SUMMARY`] characters).
    pub summary: String,
    /// The status and why, e.g. `200`, `401 missing or wrong bearer token`.
    pub outcome: String,
    pub at: SystemTime,
}

/// A change of a trading state as it is kept in `trading_state_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub broker: String,
    /// `None`: the broker's own state.
    pub strategy: Option<String>,
    /// The new state, e.g. `HALTED`.
    pub state: String,
    /// Who changed it: an admin caller's fingerprint, `supervision`, `kite`, …
    pub changed_by: String,
    pub reason: String,
    pub at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    Admin(AdminCall),
    TradingState(StateChange),
}

/// Longest body summary kept, in characters.
pub const MAX_SUMMARY: usize = 500;

/// Events waiting for the database writer before new ones are dropped.
pub const QUEUE: usize = 10_000;

/// Hands events to the database writer; cloneable, never blocking.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: SyncSender<AuditEvent>,
}

impl AuditSink {
    /// A sink and the receiving end the writer thread reads.
    pub fn channel(capacity: usize) -> (Self, Receiver<AuditEvent>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (Self { tx }, rx)
    }

    /// Queues `event` for the database, or logs it as dropped when the queue is full or the
    /// writer is gone.
    pub fn record(&self, event: AuditEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                tracing::error!(target: "alpha_panda::audit", event = ?e, "audit queue full: event not written to the database");
            }
            Err(TrySendError::Disconnected(e)) => {
                tracing::error!(target: "alpha_panda::audit", event = ?e, "audit writer stopped: event not written to the database");
            }
        }
    }
}

/// How a caller is named: `token:` and the first 12 hex digits of the SHA-256 of the bearer
/// token it presented (right or wrong), or `anonymous` without one.
pub fn fingerprint(token: &str) -> String {
    if token.is_empty() {
        return "anonymous".to_owned();
    }
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("token:{hex}")
}

/// `text` cut to [`MAX_SUMMARY`] characters (on a character boundary), with `…` when cut.
pub fn summary(text: &str) -> String {
    match text.char_indices().nth(MAX_SUMMARY) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn a_caller_without_a_token_is_anonymous_and_a_token_never_shows() {
        assert_eq!(fingerprint(""), "anonymous");
        let f = fingerprint("a-very-secret-admin-token-123");
        assert!(
            f.starts_with("token:") && f.len() == "token:".len() + 12,
            "{f}"
        );
        assert!(!f.contains("secret"));
        assert_eq!(f, fingerprint("a-very-secret-admin-token-123"));
        assert_ne!(f, fingerprint("a-very-secret-admin-token-124"));
    }

    #[test]
    fn a_full_queue_drops_the_event_instead_of_waiting() {
        let (sink, rx) = AuditSink::channel(1);
        let call = AdminCall {
            who: "anonymous".into(),
            from: "local".into(),
            what: "SIGHUP".into(),
            broker: None,
            summary: String::new(),
            outcome: "200".into(),
            at: SystemTime::UNIX_EPOCH,
        };
        sink.record(AuditEvent::Admin(call.clone()));
        sink.record(AuditEvent::Admin(call.clone()));
        assert_eq!(rx.try_recv().ok(), Some(AuditEvent::Admin(call)));
        assert!(rx.try_recv().is_err());
    }

    proptest! {
        #[test]
        fn a_summary_is_the_text_or_its_first_characters_and_an_ellipsis(text in ".{0,700}") {
            let s = summary(&text);
            let n = text.chars().count();
            if n <= MAX_SUMMARY {
                prop_assert_eq!(s, text);
            } else {
                prop_assert_eq!(s.chars().count(), MAX_SUMMARY + 1);
                prop_assert!(text.starts_with(s.trim_end_matches('…')));
            }
        }
    }
}
