//! One batch into PostgreSQL: its rows (each ignored when its event id is already there)
//! and the next offset of every partition it read, in one transaction. Either all of it is
//! written or none of it.

use std::collections::BTreeMap;

use diesel::{Connection, ExpressionMethods, PgConnection, QueryDsl, RunQueryDsl};

use crate::rows::Rows;
use crate::schema;

/// (topic, partition) → the offset after the last record of the batch.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Rows per INSERT statement: well under PostgreSQL's 65 535 bind parameters.
const CHUNK: usize = 1000;

pub fn write_batch(
    conn: &mut PgConnection,
    rows: &Rows,
    offsets: &Offsets,
) -> Result<(), diesel::result::Error> {
    conn.transaction(|c| {
        for chunk in rows.orders.chunks(CHUNK) {
            diesel::insert_into(schema::orders::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        for chunk in rows.fills.chunks(CHUNK) {
            diesel::insert_into(schema::fills::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        for chunk in rows.snapshots.chunks(CHUNK) {
            diesel::insert_into(schema::pnl_snapshots::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        for chunk in rows.rejections.chunks(CHUNK) {
            diesel::insert_into(schema::signal_rejections::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        for ((topic, partition), next) in offsets {
            // Never backwards: a partition re-read from earlier (its offsets were unreadable
            // at assignment) keeps the furthest point reached.
            diesel::sql_query(
                "INSERT INTO recorder_offsets (topic, partition, next_offset) VALUES ($1, $2, $3) \
                 ON CONFLICT (topic, partition) DO UPDATE SET \
                 next_offset = GREATEST(recorder_offsets.next_offset, EXCLUDED.next_offset), \
                 updated_at = now()",
            )
            .bind::<diesel::sql_types::Text, _>(topic)
            .bind::<diesel::sql_types::Integer, _>(*partition)
            .bind::<diesel::sql_types::BigInt, _>(*next)
            .execute(c)?;
        }
        Ok(())
    })
}

/// The stored next offsets of these topics.
pub fn read_offsets(
    conn: &mut PgConnection,
    topics: &[String],
) -> Result<Offsets, diesel::result::Error> {
    use schema::recorder_offsets::dsl;
    let found: Vec<(String, i32, i64)> = dsl::recorder_offsets
        .filter(dsl::topic.eq_any(topics))
        .select((dsl::topic, dsl::partition, dsl::next_offset))
        .load(conn)?;
    Ok(found.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
}
