//! The embedded migrations and `alpha-panda db migrate|status`.
//!
//! Two migration sets per backend: the broker set (run once per broker, in its schema or
//! file) and the shared set (`instruments`, `strategies`). On PostgreSQL a broker's run also
//! creates its writer role and grants it its own schema and read access to the shared one,
//! nothing else. Running `migrate` again applies nothing and changes nothing (the grants are
//! restated as they were).

use alpha_panda_core::BrokerName;
use diesel::backend::Backend;
use diesel::migration::{Migration, MigrationSource};
use diesel::{PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::DbError;
use crate::target::{Layout, Target, connect_pg, connect_sqlite};

const PG_BROKER: EmbeddedMigrations = embed_migrations!("migrations/postgres/broker");
const PG_SHARED: EmbeddedMigrations = embed_migrations!("migrations/postgres/shared");
const SQLITE_BROKER: EmbeddedMigrations = embed_migrations!("migrations/sqlite/broker");
const SQLITE_SHARED: EmbeddedMigrations = embed_migrations!("migrations/sqlite/shared");

/// One migration set in one place (a schema or a file) and what `migrate` or `status` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeReport {
    /// `schema paper` or `file /dir/paper.sqlite`.
    pub scope: String,
    /// Migrations applied by this run.
    pub applied: Vec<String>,
    /// Migrations already applied before this run.
    pub present: Vec<String>,
    /// Migrations not applied (only `status` leaves any).
    pub pending: Vec<String>,
}

impl std::fmt::Display for ScopeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for m in &self.present {
            writeln!(f, "{}: {m} applied", self.scope)?;
        }
        for m in &self.applied {
            writeln!(f, "{}: {m} applied now", self.scope)?;
        }
        for m in &self.pending {
            writeln!(f, "{}: {m} pending", self.scope)?;
        }
        Ok(())
    }
}

/// Applies every pending migration for the shared tables and each broker, creating schemas,
/// files and roles as needed.
pub fn migrate(
    target: &Target,
    layout: &Layout,
    brokers: &[BrokerName],
) -> Result<Vec<ScopeReport>, DbError> {
    run(target, layout, brokers, Mode::Apply)
}

/// What `migrate` would apply, without applying it.
pub fn status(
    target: &Target,
    layout: &Layout,
    brokers: &[BrokerName],
) -> Result<Vec<ScopeReport>, DbError> {
    run(target, layout, brokers, Mode::Report)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Report,
}

fn run(
    target: &Target,
    layout: &Layout,
    brokers: &[BrokerName],
    mode: Mode,
) -> Result<Vec<ScopeReport>, DbError> {
    let mut out = Vec::new();
    match target {
        Target::Postgres { url } => {
            let mut conn = connect_pg(url)?;
            let shared = layout.shared_schema();
            out.push(pg_scope(&mut conn, &shared, PG_SHARED, mode)?);
            for b in brokers {
                let schema = layout.broker_schema(b);
                out.push(pg_scope(&mut conn, &schema, PG_BROKER, mode)?);
                if mode == Mode::Apply {
                    grant_writer(&mut conn, layout, b)?;
                }
            }
        }
        Target::Sqlite { dir } => {
            let path = layout.shared_file(dir);
            out.push(sqlite_scope(&path, SQLITE_SHARED, mode)?);
            for b in brokers {
                out.push(sqlite_scope(
                    &layout.broker_file(dir, b),
                    SQLITE_BROKER,
                    mode,
                )?);
            }
        }
    }
    Ok(out)
}

fn pg_scope(
    conn: &mut PgConnection,
    schema: &str,
    set: EmbeddedMigrations,
    mode: Mode,
) -> Result<ScopeReport, DbError> {
    let scope = format!("schema {schema}");
    let exists: bool = {
        #[derive(diesel::QueryableByName)]
        struct Exists {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            exists: bool,
        }
        diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1) AS exists",
        )
        .bind::<diesel::sql_types::Text, _>(schema)
        .get_result::<Exists>(conn)
        .map_err(DbError::query(format!("looking for {scope}")))?
        .exists
    };
    if !exists && mode == Mode::Report {
        return Ok(ScopeReport {
            scope,
            applied: vec![],
            present: vec![],
            pending: names::<diesel::pg::Pg>(&set)?,
        });
    }
    diesel::sql_query(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(conn)
        .map_err(DbError::query(format!("creating {scope}")))?;
    diesel::sql_query(format!("SET search_path TO \"{schema}\""))
        .execute(conn)
        .map_err(DbError::query(format!("selecting {scope}")))?;
    scope_report(conn, scope, set, mode)
}

fn sqlite_scope(
    path: &std::path::Path,
    set: EmbeddedMigrations,
    mode: Mode,
) -> Result<ScopeReport, DbError> {
    let scope = format!("file {}", path.display());
    if !path.exists() && mode == Mode::Report {
        return Ok(ScopeReport {
            scope,
            applied: vec![],
            present: vec![],
            pending: names::<diesel::sqlite::Sqlite>(&set)?,
        });
    }
    let mut conn: SqliteConnection = connect_sqlite(path)?;
    scope_report(&mut conn, scope, set, mode)
}

fn names<DB: Backend>(set: &EmbeddedMigrations) -> Result<Vec<String>, DbError>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let all = MigrationSource::<DB>::migrations(set).map_err(|e| DbError::Migration {
        scope: "the embedded migrations".to_owned(),
        message: e.to_string(),
    })?;
    Ok(all.iter().map(|m| m.name().to_string()).collect())
}

fn scope_report<DB, C>(
    conn: &mut C,
    scope: String,
    set: EmbeddedMigrations,
    mode: Mode,
) -> Result<ScopeReport, DbError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| DbError::Migration {
        scope: scope.clone(),
        message: e.to_string(),
    };
    let all = MigrationSource::<DB>::migrations(&set).map_err(fail)?;
    let done: Vec<String> = conn
        .applied_migrations()
        .map_err(fail)?
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut report = ScopeReport {
        scope: scope.clone(),
        applied: vec![],
        present: vec![],
        pending: vec![],
    };
    for m in &all {
        let version = m.name().version().to_string();
        let name = m.name().to_string();
        if done.contains(&version) {
            report.present.push(name);
        } else if mode == Mode::Report {
            report.pending.push(name);
        }
    }
    if mode == Mode::Apply {
        let applied = conn.run_pending_migrations(set).map_err(fail)?;
        let applied: Vec<String> = applied.iter().map(ToString::to_string).collect();
        report.applied = all
            .iter()
            .filter(|m| applied.contains(&m.name().version().to_string()))
            .map(|m| m.name().to_string())
            .collect();
    }
    Ok(report)
}

/// Creates the broker's writer role when missing and grants it its schema (read, insert,
/// update) and the shared schema (read): nothing of any other broker. The user running the
/// migration becomes a member, so the daemon logging in as that user can act as the role.
fn grant_writer(
    conn: &mut PgConnection,
    layout: &Layout,
    broker: &BrokerName,
) -> Result<(), DbError> {
    let role = layout.writer_role(broker);
    let schema = layout.broker_schema(broker);
    let shared = layout.shared_schema();
    let statements = [
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') \
             THEN CREATE ROLE \"{role}\" NOLOGIN; END IF; END $$"
        ),
        format!("REVOKE ALL ON SCHEMA \"{schema}\" FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
        format!("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\""),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\""),
        format!("GRANT USAGE ON SCHEMA \"{shared}\" TO \"{role}\""),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA \"{shared}\" TO \"{role}\""),
        format!("GRANT \"{role}\" TO CURRENT_USER"),
    ];
    for sql in statements {
        diesel::sql_query(&sql)
            .execute(conn)
            .map_err(DbError::query(format!(
                "granting role {role} its schema {schema}"
            )))?;
    }
    Ok(())
}
