//! Where the rows go: a PostgreSQL database (a schema and a writer role per broker) or a
//! directory of SQLite files (a file per broker), and the names of each broker's schema,
//! role and file under `database.schema_prefix`.

use std::path::PathBuf;

use alpha_panda_config::{DatabaseSettings, mask};
use alpha_panda_core::BrokerName;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};

use crate::DbError;

/// The database of `database.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `postgres://…` or `postgresql://…`.
    Postgres { url: String },
    /// `sqlite://DIR`: one file per broker and `shared.sqlite` in DIR.
    Sqlite { dir: PathBuf },
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Target::Postgres {
                url: url.to_owned(),
            })
        } else if let Some(dir) = url.strip_prefix("sqlite://") {
            if dir.is_empty() {
                return Err(DbError::BadUrl {
                    url: url.to_owned(),
                    problem: "expected sqlite://DIRECTORY, the directory is missing".to_owned(),
                });
            }
            Ok(Target::Sqlite {
                dir: PathBuf::from(dir),
            })
        } else {
            Err(DbError::BadUrl {
                url: mask::url(url),
                problem: "expected postgres://user@host:port/db or sqlite://DIRECTORY".to_owned(),
            })
        }
    }

    /// The target of the settings; `None` when `database.url` is absent.
    pub fn from_settings(s: &DatabaseSettings) -> Result<Option<Self>, DbError> {
        s.url.as_deref().map(Self::parse).transpose()
    }

    /// The URL with any password masked, for messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Postgres { url } => mask::url(url),
            Target::Sqlite { dir } => format!("sqlite://{}", dir.display()),
        }
    }
}

/// Names of schemas, roles and files under one prefix. Broker names and the prefix are
/// lowercase identifiers (validated by the settings), so they are safe inside quotes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub prefix: String,
}

impl Layout {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn broker_schema(&self, broker: &BrokerName) -> String {
        format!("{}{}", self.prefix, broker.as_str())
    }

    pub fn shared_schema(&self) -> String {
        format!("{}shared", self.prefix)
    }

    /// The role that writes a broker's schema.
    pub fn writer_role(&self, broker: &BrokerName) -> String {
        format!("{}{}_writer", self.prefix, broker.as_str())
    }

    pub fn broker_file(&self, dir: &std::path::Path, broker: &BrokerName) -> PathBuf {
        dir.join(format!("{}.sqlite", self.broker_schema(broker)))
    }

    pub fn shared_file(&self, dir: &std::path::Path) -> PathBuf {
        dir.join(format!("{}.sqlite", self.shared_schema()))
    }
}

pub fn connect_pg(url: &str) -> Result<PgConnection, DbError> {
    PgConnection::establish(url).map_err(|source| DbError::Connect {
        url: mask::url(url),
        source,
    })
}

pub fn connect_sqlite(path: &std::path::Path) -> Result<SqliteConnection, DbError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Io(format!("creating {}: {e}", dir.display())))?;
    }
    let url = path.display().to_string();
    let mut conn = SqliteConnection::establish(&url).map_err(|source| DbError::Connect {
        url: url.clone(),
        source,
    })?;
    // Readers (an export) do not block the recorder, and a busy file is waited for.
    for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA busy_timeout = 5000"] {
        diesel::sql_query(pragma)
            .execute(&mut conn)
            .map_err(DbError::query(format!("{pragma} on {url}")))?;
    }
    Ok(conn)
}

/// A connection to PostgreSQL acting as a broker's writer role, its own schema first on the
/// search path: what the recorder writes with. The login user must be a member of the role
/// (`db migrate` grants it to the user that ran it).
pub fn connect_as_writer(
    url: &str,
    layout: &Layout,
    broker: &BrokerName,
) -> Result<PgConnection, DbError> {
    let mut conn = connect_pg(url)?;
    let role = layout.writer_role(broker);
    let schema = layout.broker_schema(broker);
    diesel::sql_query(format!("SET ROLE \"{role}\""))
        .execute(&mut conn)
        .map_err(DbError::query(format!(
            "acting as role {role} (run `alpha-panda db migrate` first)"
        )))?;
    diesel::sql_query(format!("SET search_path TO \"{schema}\""))
        .execute(&mut conn)
        .map_err(DbError::query(format!("selecting schema {schema}")))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_and_a_sqlite_directory_are_targets_and_anything_else_is_named() {
        assert_eq!(
            Target::parse("postgres://u@h/db").ok(),
            Some(Target::Postgres {
                url: "postgres://u@h/db".into()
            })
        );
        assert_eq!(
            Target::parse("sqlite:///var/lib/ap").ok(),
            Some(Target::Sqlite {
                dir: "/var/lib/ap".into()
            })
        );
        let err = Target::parse("mysql://u:secret@h/db")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("mysql://u:") && !err.contains("secret"),
            "{err}"
        );
        assert!(Target::parse("sqlite://").is_err());
    }

    #[test]
    fn names_carry_the_prefix_and_the_broker() {
        let l = Layout::new("t1_");
        let paper = BrokerName::paper();
        assert_eq!(l.broker_schema(&paper), "t1_paper");
        assert_eq!(l.writer_role(&paper), "t1_paper_writer");
        assert_eq!(l.shared_schema(), "t1_shared");
    }
}
