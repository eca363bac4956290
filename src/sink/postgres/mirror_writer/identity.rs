//! Which source table a destination mirrors, by relation id.
//!
//! A name is not an identity: `ALTER TABLE a RENAME TO b` keeps the table
//! (and its relation id) under a new name, and `DROP TABLE a; CREATE TABLE
//! a (...)` makes a new table (a new relation id) under the old name. Only
//! the stream's Relation messages tell the id (an `S` record announced by a
//! copy carries none), so each destination's source relation id is kept in
//! `walpipe.source_tables`, seeded from the catalog when the job opens.
//!
//! ```text
//!  S record (name N, relation R)
//!     ├─ N recorded as R ──────────────> the same table
//!     ├─ N recorded as another id ─────> a new table under the old name: the
//!     │                                   destination is made again from R's shape
//!     │                                   (the old one dropped, or kept aside under
//!     │                                   WALPIPE_SCHEMA_DROP=keep)
//!     ├─ R recorded under another name M ─> renamed: M's destination is renamed with
//!     │                                   it (unless a mapping named it), and
//!     │                                   walpipe's records of M (columns, marks,
//!     │                                   copy progress) follow
//!     └─ neither ──────────────────────> recorded
//! ```
//!
//! Invariants:
//! - Every step runs in the sink transaction of the change after the
//!   shape, so a crash replays the shape and finds the same answer.
//! - No row of a dropped table survives in the destination of the table
//!   created again under its name (under `keep`, they are kept aside).

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{MirrorWriter, Target};
use crate::names::{TableName, quote_ident};
use crate::sink::postgres::SinkError;
use crate::sink::postgres::evolve::DropPolicy;
use crate::sink::postgres::record::Record;

/// Source relation ids by source table (`schema.name`), as recorded.
pub type Identities = HashMap<String, u32>;

/// The destination a mapping gives a source table (`None`: its own name).
pub type Mapping = Box<dyn Fn(&TableName) -> Option<TableName> + Send + Sync>;

/// What [`MirrorWriter::identify`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identified {
    /// The same table as before (or one first seen): follow its shape.
    Known,
    /// The table was made again: its destination follows the shape already.
    Recreated,
}

impl MirrorWriter {
    /// Works out which table an `S` record with relation id `relation`
    /// describes, and renames or replaces its destination when it is not the
    /// one the destination mirrored.
    pub(super) async fn identify(
        &mut self,
        client: &Client,
        record: &Record,
        relation: u32,
    ) -> Result<Identified, SinkError> {
        let Some(name) = source_name(record) else { return Ok(Identified::Known) };
        let identities = match &mut self.identities {
            Some(identities) => identities,
            slot @ None => slot.insert(recorded(client, self.follower.job()).await?),
        };
        let qualified = name.qualified();
        let outcome = match identities.get(&qualified).copied() {
            Some(known) if known == relation => return Ok(Identified::Known),
            Some(known) => {
                self.recreate(client, record, &name, known).await?;
                Identified::Recreated
            }
            None => {
                let renamed_from = identities.iter().find(|(_, id)| **id == relation).map(|(t, _)| t.clone());
                if let Some(from) = renamed_from {
                    self.rename(client, &from, &name).await?;
                }
                Identified::Known
            }
        };
        record_identity(client, self.follower.job(), &qualified, relation).await?;
        if let Some(identities) = &mut self.identities {
            identities.retain(|_, id| *id != relation);
            identities.insert(qualified, relation);
        }
        Ok(outcome)
    }

    /// `name` is a new table under an old name: its destination is dropped
    /// (or kept aside) and made again from the record's shape.
    async fn recreate(
        &mut self,
        client: &Client,
        record: &Record,
        name: &TableName,
        dropped: u32,
    ) -> Result<(), SinkError> {
        let Some(target) = self.targets.remove(record.table()) else { return Ok(()) };
        let destination = &target.place.destination;
        let job = self.follower.job().to_string();
        let statement = match self.follower.drops() {
            DropPolicy::Drop => format!("DROP TABLE {}", destination.quoted()),
            DropPolicy::Keep => format!(
                "ALTER TABLE {} RENAME TO {}",
                destination.quoted(),
                quote_ident(&aside_table(&destination.name, dropped))
            ),
        };
        client.batch_execute(&statement).await?;
        client
            .execute(
                "DELETE FROM walpipe.source_columns WHERE job_name = $1 AND source_table = $2",
                &[&job, &name.qualified()],
            )
            .await?;
        tracing::warn!(job = %job, table = %name, destination = %destination, %statement,
            "the source table was dropped and created again: its destination is made again from the new table, without the dropped table's rows");
        let place = target.place;
        if let Some(made) = self.follower.create_from_record(client, &place, record).await? {
            let shape = record.after_commit_lsn().to_vec();
            self.targets.insert(
                record.table().to_vec(),
                Target { destination: Some(made), shape, ..Target::new(place) },
            );
        }
        Ok(())
    }

    /// The table `from` is now called `to`: its destination takes the new
    /// name (unless a mapping named it), and walpipe's records follow.
    async fn rename(&mut self, client: &Client, from: &str, to: &TableName) -> Result<(), SinkError> {
        let mut escaped_from = Vec::new();
        crate::change::mirror_records::escape(&mut escaped_from, from.as_bytes());
        let mut escaped_to = Vec::new();
        crate::change::mirror_records::escape(&mut escaped_to, to.qualified().as_bytes());
        let job = self.follower.job().to_string();
        let Some(mut target) = self.targets.remove(&escaped_from) else { return Ok(()) };
        if self.targets.contains_key(&escaped_to) {
            tracing::warn!(job = %job, table = %to, renamed_from = %from, kept = %target.place.destination,
                "a table was renamed onto a name that already has a destination (made while walpipe was down): the old destination is kept as it is, and the new one is copied");
            return Ok(());
        }
        let old_destination = target.place.destination.clone();
        let mapped = (self.mapping)(&target.place.source).is_some();
        let destination =
            if mapped { old_destination.clone() } else { (self.mapping)(to).unwrap_or_else(|| to.clone()) };
        if destination.schema != old_destination.schema {
            client
                .batch_execute(&format!(
                    "ALTER TABLE {} SET SCHEMA {}",
                    old_destination.quoted(),
                    quote_ident(&destination.schema)
                ))
                .await?;
        }
        if destination.name != old_destination.name {
            let moved = TableName::new(&destination.schema, &old_destination.name);
            client
                .batch_execute(&format!(
                    "ALTER TABLE {} RENAME TO {}",
                    moved.quoted(),
                    quote_ident(&destination.name)
                ))
                .await?;
        }
        for table in ["source_columns", "recopy_needed"] {
            client
                .execute(
                    &format!("UPDATE walpipe.{table} SET source_table = $3 WHERE job_name = $1 AND source_table = $2"),
                    &[&job, &from, &to.qualified()],
                )
                .await?;
        }
        // Its copy's progress too, so that the next session does not take it for an added table.
        client
            .execute(
                "UPDATE walpipe.checkpoints SET copy_progress = (copy_progress - $2) || jsonb_build_object($3::text, copy_progress -> $2) \
                 WHERE job_name = $1 AND copy_progress ? $2",
                &[&job, &from, &to.qualified()],
            )
            .await?;
        tracing::info!(job = %job, table = %to, renamed_from = %from, destination = %destination, previous_destination = %old_destination,
            "followed a table rename");
        target.place.source = to.clone();
        target.place.destination = destination;
        // Its statements name the old destination: the shape that follows makes them again.
        target.destination = None;
        target.shape.clear();
        self.targets.insert(escaped_to, target);
        Ok(())
    }
}

/// The source table an `S` record names.
pub(super) fn source_name(record: &Record) -> Option<TableName> {
    let text = crate::change::mirror_records::unescape(record.table())?;
    let text = std::str::from_utf8(&text).ok()?;
    let (schema, name) = text.split_once('.')?;
    Some(TableName::new(schema, name))
}

/// Where `WALPIPE_SCHEMA_DROP=keep` keeps the destination of a dropped
/// table whose name a new table took: `<name>_dropped_<relation id>`.
pub fn aside_table(name: &str, relation: u32) -> String {
    crate::names::with_suffix(name, &format!("_dropped_{relation}"))
}

/// The relation ids recorded for `job`'s source tables.
async fn recorded(client: &Client, job: &str) -> Result<Identities, SinkError> {
    let rows = client
        .query("SELECT source_table, relid FROM walpipe.source_tables WHERE job_name = $1", &[&job])
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Records `table` as the source relation `relation` (and no other table as it).
async fn record_identity(client: &Client, job: &str, table: &str, relation: u32) -> Result<(), SinkError> {
    client
        .execute(
            "WITH gone AS (DELETE FROM walpipe.source_tables WHERE job_name = $1 AND relid = $3 AND source_table <> $2) \
             INSERT INTO walpipe.source_tables (job_name, source_table, relid) VALUES ($1, $2, $3) \
             ON CONFLICT (job_name, source_table) DO UPDATE SET relid = excluded.relid",
            &[&job, &table, &relation],
        )
        .await?;
    Ok(())
}

/// Records the relation id of a table the job opened with, unless one is
/// recorded already (a table made again while walpipe was down is then
/// found by its first shape).
pub async fn seed(
    client: &Client,
    job: &str,
    table: &str,
    relation: u32,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO walpipe.source_tables (job_name, source_table, relid) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&job, &table, &relation],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aside_table_name_fits_in_63_bytes() {
        assert_eq!(aside_table("orders", 16384), "orders_dropped_16384");
        let aside = aside_table(&"x".repeat(70), 16384);
        assert_eq!(aside.len(), 63);
        assert!(aside.ends_with("_dropped_16384"));
    }
}
