//! Mirror mode: each destination table holds the current state of each
//! source row (see the module above for the commit rules).

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::batch::{Admit, Record, TableBatch};
use super::copied::CopiedRecord;
use super::copied_in::{CopyIn, Finished, stage_upserts};
use super::follow::{Follower, Place};
use super::schema::Destination;
use super::{SinkError, Writer};
use crate::change::mirror_records::unescape;
use crate::names::TableName;

mod identity;

use identity::{Identified, Identities};
pub use identity::{Mapping, seed as seed_identity};

/// One destination and its pending rows.
struct Target {
    place: Place,
    /// Its statements for the table's current shape: set by the shape record
    /// that comes before the table's first change in a session.
    destination: Option<Destination>,
    /// The shape record `destination` was made for (without its commit LSN).
    shape: Vec<u8>,
    batch: TableBatch,
}

pub struct MirrorWriter {
    /// By source table, as escaped in mirror records (`schema.name`).
    targets: HashMap<Vec<u8>, Target>,
    follower: Follower,
    /// Where a table first seen in the stream goes, when the job takes every
    /// table of its schema (`None`: only the tables it started with).
    discovery: Option<Discovery>,
    pending: usize,
    /// Copied rows streaming into their destination; finished before any
    /// other statement, so before anything staged after them is applied.
    copying: Option<CopyIn>,
    /// The source relation id of each table, read at the first shape.
    identities: Option<Identities>,
    /// The destinations mappings give (a renamed table keeps a mapped one).
    mapping: Mapping,
}

/// The destination of a source table the job did not know when it started.
pub type Discovery = Box<dyn Fn(&TableName) -> TableName + Send + Sync>;

impl MirrorWriter {
    /// `places`: by source table `schema.name`.
    pub fn new(
        places: HashMap<String, Place>,
        follower: Follower,
        discovery: Option<Discovery>,
        mapping: Mapping,
    ) -> Self {
        let targets = places
            .into_iter()
            .map(|(table, place)| {
                let mut escaped = Vec::new();
                crate::change::mirror_records::escape(&mut escaped, table.as_bytes());
                (escaped, Target::new(place))
            })
            .collect();
        MirrorWriter { targets, follower, discovery, pending: 0, copying: None, identities: None, mapping }
    }

    /// A shape of a table the job does not know yet: with discovery on, its
    /// destination is created and the table mirrored from here on.
    async fn discover(&mut self, client: &Client, record: &Record) -> Result<(), SinkError> {
        let Some(discovery) = &self.discovery else { return Ok(()) };
        let Some(source) = unescape(record.table())
            .and_then(|name| String::from_utf8(name.into_owned()).ok())
            .and_then(|name| name.split_once('.').map(|(schema, table)| TableName::new(schema, table)))
        else {
            return Ok(());
        };
        let place = Place { destination: discovery(&source), source, stage_index: self.targets.len() };
        // Without a key it is not mirrored: its rows are skipped like any table the job does not take.
        if let Some(destination) = self.follower.create_from_record(client, &place, record).await? {
            let shape = record.after_commit_lsn().to_vec();
            let target = Target { destination: Some(destination), shape, ..Target::new(place) };
            self.targets.insert(record.table().to_vec(), target);
        }
        Ok(())
    }

    fn stage(&mut self, record: &Record) -> Result<Admit, SinkError> {
        // A table the job does not mirror (the publication has more): skip it.
        let Some(target) = self.targets.get_mut(record.table()) else { return Ok(Admit::Added) };
        let Some(destination) = &target.destination else {
            return Err(SinkError::Record(format!(
                "a change of {} came before its table's shape",
                target.place.source
            )));
        };
        target.batch.add(record, destination.width, &destination.key_positions).map_err(SinkError::Record)
    }
}

impl Target {
    fn new(place: Place) -> Target {
        Target { place, destination: None, shape: Vec::new(), batch: TableBatch::default() }
    }
}

impl MirrorWriter {
    /// Streams a copied row into its destination's open copy (opened
    /// here); what was staged before it goes in first.
    async fn add_copied(
        &mut self,
        client: &Client,
        line: &Bytes,
        record: CopiedRecord<'_>,
    ) -> Result<(), SinkError> {
        if self.copying.as_ref().is_some_and(|copy| copy.table != record.table) {
            self.finish_copy(client).await?;
        }
        if self.copying.is_none() {
            // A table the job does not mirror: skip it.
            let Some(target) = self.targets.get(record.table) else { return Ok(()) };
            let Some(destination) = &target.destination else {
                return Err(SinkError::Record(format!(
                    "a copied row of {} came before its shape",
                    target.place.source
                )));
            };
            let statement = destination.copy_new_rows.clone();
            self.apply(client).await?;
            self.copying = Some(CopyIn::start(client, record.table, &statement).await?);
        }
        if let Some(copy) = &mut self.copying {
            copy.push(line, &record).await;
        }
        Ok(())
    }

    /// Ends the open copy; if some of its rows exist already (the stream
    /// wrote them first), they all go into the staging table with one
    /// `COPY` and in with the guarded upsert: a row with a newer position
    /// stays. The staging table is empty here: `apply_staged` empties it,
    /// and a copy is finished before anything is staged after it.
    async fn finish_copy(&mut self, client: &Client) -> Result<(), SinkError> {
        let Some(copy) = self.copying.take() else { return Ok(()) };
        let table = copy.table.clone();
        let Finished::KeyExists(lines) = copy.finish(client).await? else { return Ok(()) };
        let destination = self
            .targets
            .get(&table)
            .and_then(|target| target.destination.as_ref())
            .ok_or_else(|| SinkError::Record("a copy without its table's shape".into()))?;
        stage_upserts(client, &destination.copy_upserts, &lines).await?;
        client.execute(&destination.upserts, &[]).await?;
        client.batch_execute(&format!("TRUNCATE {}", destination.stage)).await?;
        Ok(())
    }
}

impl Writer for MirrorWriter {
    async fn add(&mut self, client: &Client, line: Bytes) -> Result<bool, SinkError> {
        if let Some(record) = CopiedRecord::parse(&line) {
            self.add_copied(client, &line, record).await?;
            return Ok(true);
        }
        if self.copying.is_some() {
            self.apply(client).await?;
        }
        let record = Record::parse(line).map_err(SinkError::Record)?;
        match record.op() {
            b'M' => {}
            b'S' => {
                // Rows staged under the old shape are written with its statements first.
                self.apply(client).await?;
                let relation = record.relation_id();
                if let Some(relation) = relation {
                    if self.identify(client, &record, relation).await? == Identified::Recreated {
                        return Ok(false);
                    }
                }
                match self.targets.get_mut(record.table()) {
                    // The same shape again, announced by a copy (each chunk does).
                    Some(target)
                        if target.destination.is_some()
                            && target.shape == record.after_commit_lsn()
                            && relation.is_none() => {}
                    // The same shape from the stream (after a reconnect, or a
                    // column dropped and added again under its name and type):
                    // the statements stay unless the destination had to change.
                    Some(target)
                        if target.destination.is_some() && target.shape == record.after_commit_lsn() =>
                    {
                        if self.follower.refollow_record(client, &target.place, &record).await? {
                            target.destination =
                                Some(self.follower.follow_record(client, &target.place, &record).await?);
                        }
                    }
                    Some(target) => {
                        let destination = self.follower.follow_record(client, &target.place, &record).await?;
                        target.destination = Some(destination);
                        target.shape = record.after_commit_lsn().to_vec();
                    }
                    None => self.discover(client, &record).await?,
                }
                return Ok(false);
            }
            b'R' => {
                self.apply(client).await?;
                if let Some(target) = self.targets.get(record.table()) {
                    remove_uncopied(client, target, &record).await?;
                }
            }
            b'T' => {
                self.apply(client).await?;
                if let Some(target) = self.targets.get(record.table()) {
                    client.batch_execute(&format!("TRUNCATE {}", target.place.destination.quoted())).await?;
                }
            }
            _ => {
                if self.stage(&record)? == Admit::ApplyFirst {
                    self.apply(client).await?;
                    self.stage(&record)?;
                }
                self.pending += 1;
            }
        }
        Ok(true)
    }

    /// The open copy, then what is staged.
    async fn apply(&mut self, client: &Client) -> Result<(), SinkError> {
        self.finish_copy(client).await?;
        self.apply_staged(client).await
    }

    /// Staged changes and copied rows, and an open copy as one (its rows are on their way already).
    fn pending(&self) -> usize {
        self.pending + usize::from(self.copying.is_some())
    }
}

impl MirrorWriter {
    /// Per table: COPY into its staging table, then one statement per kind present.
    async fn apply_staged(&mut self, client: &Client) -> Result<(), SinkError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        for target in self.targets.values_mut() {
            let Some(destination) = &target.destination else { continue };
            if target.batch.is_empty() {
                continue;
            }
            if let Some(rows) = target.batch.insert_rows() {
                // New rows: COPY them straight in. A row that exists (a replay)
                // fails the COPY on the key, and the batch takes the guarded path.
                client.batch_execute("SAVEPOINT walpipe_new_rows").await?;
                match copy(client, &destination.copy_new_rows, rows).await {
                    Ok(()) => {
                        client.batch_execute("RELEASE SAVEPOINT walpipe_new_rows").await?;
                        target.batch.clear();
                        continue;
                    }
                    Err(error)
                        if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        client.batch_execute("ROLLBACK TO SAVEPOINT walpipe_new_rows").await?;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            let (rows, kinds) = target.batch.take_staging(&destination.key_positions);
            copy(client, &destination.copy_in, rows).await?;
            // Moves read the rows under their old keys, so they go before the deletes.
            for (count, statement) in [
                (kinds.moves, &destination.moves),
                (kinds.deletes, &destination.deletes),
                (kinds.upserts, &destination.upserts),
                (kinds.keeping_toast, &destination.updates_keeping_toast),
            ] {
                if count > 0 {
                    client.execute(statement, &[]).await?;
                }
            }
            client.batch_execute(&format!("TRUNCATE {}", destination.stage)).await?;
        }
        Ok(())
    }
}

/// The end of a copy that reconciles: the rows it did not write and the
/// stream did not change since the copy's start (`_walpipe_lsn` older, or
/// NULL) are gone from the source.
async fn remove_uncopied(client: &Client, target: &Target, record: &Record) -> Result<(), SinkError> {
    let since = record.values_from_start().first().map(|v| String::from_utf8_lossy(v).into_owned());
    let Some(since) = since.filter(|since| since.parse::<crate::lsn::Lsn>().is_ok()) else {
        return Err(SinkError::Record(format!(
            "the end of a copy of {} names no position",
            target.place.source
        )));
    };
    let removed = client
        .execute(
            &format!(
                "DELETE FROM {} WHERE {lsn} IS NULL OR {lsn} < $1::text::pg_lsn",
                target.place.destination.quoted(),
                lsn = super::schema::LSN_COLUMN
            ),
            &[&since],
        )
        .await?;
    tracing::info!(table = %target.place.source, removed, %since,
        "snapshot {}: removed {removed} rows the source no longer has", target.place.source);
    Ok(())
}

/// `COPY ... FROM STDIN` of `rows` (COPY text).
async fn copy(client: &Client, statement: &str, rows: Vec<u8>) -> Result<(), tokio_postgres::Error> {
    let writer = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(writer);
    writer.send(Bytes::from(rows)).await?;
    writer.finish().await.map(drop)
}
