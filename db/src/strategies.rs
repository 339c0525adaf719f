//! Strategies kept in the shared `strategies` table: `alpha-panda strategies import FILE`
//! replaces the whole set in one transaction (after the same validation as start-up, done by
//! the caller), `strategies export` prints it back, and a daemon with
//! `database.strategies_from_database = true` starts with it instead of the settings' list.
//! A row holds one `[[strategies]]` entry as JSON and its place in the file.

use alpha_panda_config::StrategySettings;
use diesel::{Connection, RunQueryDsl};

use crate::DbError;
use crate::target::{Layout, connect_pg};

#[derive(diesel::QueryableByName)]
struct Definition {
    #[diesel(sql_type = diesel::sql_types::Text)]
    strategy_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    definition: String,
}

/// Replaces every stored strategy with `set`, in order; `by` is recorded as `updated_by`.
pub fn replace_all(
    url: &str,
    layout: &Layout,
    set: &[StrategySettings],
    by: &str,
) -> Result<usize, DbError> {
    let schema = layout.shared_schema();
    let mut conn = connect_pg(url)?;
    let rows: Vec<(String, String, bool)> = set
        .iter()
        .map(|s| {
            serde_json::to_string(s)
                .map(|json| (s.id.to_string(), json, s.enabled))
                .map_err(|e| DbError::Io(format!("strategy {}: {e}", s.id)))
        })
        .collect::<Result<_, _>>()?;
    conn.transaction(|c| {
        diesel::sql_query(format!("DELETE FROM \"{schema}\".strategies")).execute(c)?;
        for (position, (id, json, enabled)) in rows.iter().enumerate() {
            diesel::sql_query(format!(
                "INSERT INTO \"{schema}\".strategies \
                 (strategy_id, definition, enabled, updated_by, position) \
                 VALUES ($1, $2::jsonb, $3, $4, $5)"
            ))
            .bind::<diesel::sql_types::Text, _>(id)
            .bind::<diesel::sql_types::Text, _>(json)
            .bind::<diesel::sql_types::Bool, _>(*enabled)
            .bind::<diesel::sql_types::Text, _>(by)
            .bind::<diesel::sql_types::Integer, _>(i32::try_from(position).unwrap_or(i32::MAX))
            .execute(c)?;
        }
        Ok(rows.len())
    })
    .map_err(DbError::query(format!(
        "replacing the strategies in schema {schema}"
    )))
}

/// The stored strategies, in their stored order; a row that does not read as a strategy is
/// an error naming its id.
pub fn load_all(url: &str, layout: &Layout) -> Result<Vec<StrategySettings>, DbError> {
    let schema = layout.shared_schema();
    let mut conn = connect_pg(url)?;
    let rows: Vec<Definition> = diesel::sql_query(format!(
        "SELECT strategy_id, definition::text AS definition FROM \"{schema}\".strategies \
         ORDER BY position, strategy_id"
    ))
    .load(&mut conn)
    .map_err(DbError::query(format!(
        "reading the strategies of schema {schema}"
    )))?;
    rows.into_iter()
        .map(|r| {
            serde_json::from_str(&r.definition).map_err(|e| {
                DbError::Io(format!(
                    "strategy {} in {schema}.strategies does not read as a strategy: {e}",
                    r.strategy_id
                ))
            })
        })
        .collect()
}
