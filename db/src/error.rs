//! The errors of the persistence layer, each naming what failed and where. Apart from a
//! bad URL, every one is the database being away or refusing: infrastructure, which a
//! retry may get past.

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url = {url}: {problem}")]
    BadUrl { url: String, problem: String },
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: diesel::ConnectionError,
    },
    #[error("{what}: {source}")]
    Query {
        what: String,
        #[source]
        source: diesel::result::Error,
    },
    #[error("migrating {scope}: {message}")]
    Migration { scope: String, message: String },
    #[error("{0}")]
    Io(String),
}

impl DbError {
    pub fn query(what: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> DbError {
        let what = what.into();
        move |source| DbError::Query { what, source }
    }
}
