//! Mirror mode: each destination table holds the current state of each
//! source row (see the module above for the commit rules).

use std::collections::HashMap;

use bytes::Bytes;
use foldhash::HashMap as FastMap;
use tokio_postgres::Client;

use super::batch::{Admit, TableBatch};
use super::copied::CopiedRecord;
use super::copied_in::{CopyIn, CopyInto, Finished, stage_upserts};
use super::few_rows;
use super::follow::{Follower, Place};
use super::isolation::{self, OnTableError};
use super::new_rows::{self, Copied};
use super::record::Record;
use super::schema::Destination;
use super::{SinkError, Writer};
use crate::names::TableName;
use crate::pg::sql::copy_rows;

mod identity;
mod isolate;
mod with_commit;

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
    /// Its changes are skipped: the sink could not apply one (see `isolation`).
    isolated: bool,
}

/// The destinations as the committed sink has them: their places,
/// statements, shapes and isolation, and the tables' identities.
pub struct Saved {
    targets: FastMap<Vec<u8>, Target>,
    identities: Option<Identities>,
}

pub struct MirrorWriter {
    /// By source table, as escaped in mirror records (`schema.name`):
    /// looked up once per change.
    targets: FastMap<Vec<u8>, Target>,
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
    /// What a table's own trouble does: isolate it (savepoints around each
    /// table's work), or fail the job.
    on_error: OnTableError,
    metrics: std::sync::Arc<crate::metrics::JobMetrics>,
}

/// How a [`MirrorWriter`] names destinations and meets a table's trouble.
pub struct Options {
    pub discovery: Option<Discovery>,
    pub mapping: Mapping,
    pub on_error: OnTableError,
    pub metrics: std::sync::Arc<crate::metrics::JobMetrics>,
}

/// The destination of a source table the job did not know when it started.
pub type Discovery = Box<dyn Fn(&TableName) -> TableName + Send + Sync>;

impl MirrorWriter {
    /// `places`: by source table `schema.name`.
    pub fn new(places: HashMap<String, Place>, follower: Follower, options: Options) -> Self {
        let Options { discovery, mapping, on_error, metrics } = options;
        let targets = places
            .into_iter()
            .map(|(table, place)| {
                let mut escaped = Vec::new();
                crate::change::mirror_records::escape(&mut escaped, table.as_bytes());
                (escaped, Target::new(place))
            })
            .collect();
        MirrorWriter {
            targets,
            follower,
            discovery,
            pending: 0,
            copying: None,
            identities: None,
            mapping,
            on_error,
            metrics,
        }
    }

    /// A shape of a table the job does not know yet: with discovery on, its
    /// destination is created and the table mirrored from here on.
    async fn discover(&mut self, client: &Client, record: &Record) -> Result<(), SinkError> {
        let Some(discovery) = &self.discovery else { return Ok(()) };
        let Some(source) = identity::source_name(record) else { return Ok(()) };
        let place = Place {
            destination: discovery(&source),
            source,
            stage_index: self.targets.len(),
            replaces: None,
        };
        // Without a key it is not mirrored: its rows are skipped like any table the job does not take.
        if let Some(destination) = self.follower.create_from_record(client, &place, record).await? {
            let shape = record.after_commit_lsn().to_vec();
            let target = Target { destination: Some(destination), shape, ..Target::new(place) };
            self.targets.insert(record.table().to_vec(), target);
        }
        Ok(())
    }

    fn stage(&mut self, record: Record) -> Result<Admit, SinkError> {
        // A table the job does not mirror (the publication has more), or an isolated one: skip it.
        let Some(target) = self.targets.get_mut(record.table()).filter(|t| !t.isolated) else {
            return Ok(Admit::Added);
        };
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
        Target { place, destination: None, shape: Vec::new(), batch: TableBatch::default(), isolated: false }
    }

    /// The target without its staged rows.
    fn saved(&self) -> Target {
        Target {
            destination: self.destination.clone(),
            shape: self.shape.clone(),
            isolated: self.isolated,
            ..Target::new(self.place.clone())
        }
    }
}

impl MirrorWriter {
    /// The open copy, then what is staged.
    async fn apply_pending(&mut self, client: &Client) -> Result<(), SinkError> {
        self.finish_copy(client).await?;
        self.apply_staged(client).await
    }

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
            // A table the job does not mirror, or an isolated one: skip it.
            let Some(target) = self.targets.get(record.table).filter(|t| !t.isolated) else { return Ok(()) };
            let Some(destination) = &target.destination else {
                return Err(SinkError::Record(format!(
                    "a copied row of {} came before its shape",
                    target.place.source
                )));
            };
            let into = CopyInto::of(destination);
            self.apply(client).await?;
            self.savepoint(client).await?;
            match CopyIn::start(client, record.table, into).await {
                Ok(copy) => self.copying = Some(copy),
                Err(error) => return self.settle(client, record.table, Err(error)).await,
            }
        }
        if let Some(copy) = &mut self.copying {
            copy.push(line, &record).await;
        }
        Ok(())
    }

    /// Ends the open copy; if some of its rows exist already (the stream
    /// wrote them first), or they could not go in binary, they all go into the staging table with one
    /// `COPY` and in with the guarded upsert: a row with a newer position
    /// stays. The staging table is empty here: `apply_staged` empties it,
    /// and a copy is finished before anything is staged after it.
    async fn finish_copy(&mut self, client: &Client) -> Result<(), SinkError> {
        let Some(copy) = self.copying.take() else { return Ok(()) };
        let table = copy.table.clone();
        let finished = self.finish_copy_of(client, copy).await;
        self.settle(client, &table, finished).await
    }

    async fn finish_copy_of(&mut self, client: &Client, copy: CopyIn) -> Result<(), SinkError> {
        let table = copy.table.clone();
        let (lines, types_changed) = match copy.finish(client).await? {
            Finished::Written => return Ok(()),
            Finished::Redo(lines) => (lines, false),
            Finished::TypesChanged(lines) => (lines, true),
        };
        let destination = self
            .targets
            .get_mut(&table)
            .and_then(|target| target.destination.as_mut())
            .ok_or_else(|| SinkError::Record("a copy without its table's shape".into()))?;
        if types_changed {
            new_rows::binary_off(destination);
        }
        let staging = destination.staging(client).await?;
        stage_upserts(client, &staging.copy_upserts, &lines).await?;
        client.execute(&staging.upserts, &[]).await?;
        client.batch_execute(&format!("TRUNCATE {}", staging.stage)).await?;
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
                self.savepoint(client).await?;
                let followed = self.take_shape(client, &record).await;
                self.settle(client, record.table(), followed).await?;
                return Ok(false);
            }
            b'R' => {
                self.apply(client).await?;
                if let Some(target) = self.targets.get(record.table()).filter(|t| !t.isolated) {
                    remove_uncopied(client, target, &record).await?;
                    if target.place.replaces.is_some() {
                        self.swap_in_rebuild(client, record.table()).await?;
                    }
                }
            }
            b'T' => {
                self.apply(client).await?;
                if let Some(target) = self.targets.get(record.table()).filter(|t| !t.isolated) {
                    client.batch_execute(&format!("TRUNCATE {}", target.place.destination.quoted())).await?;
                }
            }
            _ => {
                if let Admit::ApplyFirst(record) = self.stage(record)? {
                    self.apply(client).await?;
                    self.stage(record)?;
                }
                self.pending += 1;
            }
        }
        Ok(true)
    }

    async fn apply(&mut self, client: &Client) -> Result<(), SinkError> {
        self.apply_pending(client).await
    }

    async fn apply_then<T: Send>(
        &mut self,
        client: &Client,
        commit: impl std::future::Future<Output = T> + Send,
    ) -> Result<Option<T>, SinkError> {
        self.apply_with_commit(client, commit).await
    }

    /// Staged changes and copied rows, and an open copy as one (its rows are on their way already).
    fn pending(&self) -> usize {
        self.pending + usize::from(self.copying.is_some())
    }

    type Saved = Saved;

    fn save(&self) -> Saved {
        let targets = self.targets.iter().map(|(table, target)| (table.clone(), target.saved())).collect();
        Saved { targets, identities: self.identities.clone() }
    }

    /// A destination made or changed since is gone with the rollback, and
    /// with it what was staged and any copy left open.
    fn restore(&mut self, Saved { targets, identities }: Saved) {
        self.targets = targets;
        self.identities = identities;
        self.pending = 0;
        self.copying = None;
    }
}

impl MirrorWriter {
    /// Takes a table's shape: works out which table it is, then makes the
    /// destination follow it (or creates one for a table first seen).
    async fn take_shape(&mut self, client: &Client, record: &Record) -> Result<(), SinkError> {
        if self.targets.get(record.table()).is_some_and(|t| t.isolated) {
            return Ok(());
        }
        let relation = record.relation_id();
        if let Some(relation) = relation {
            if self.identify(client, record, relation).await? == Identified::Recreated {
                return Ok(());
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
            Some(target) if target.destination.is_some() && target.shape == record.after_commit_lsn() => {
                if self.follower.refollow_record(client, &target.place, record).await? {
                    target.destination =
                        Some(self.follower.follow_record(client, &target.place, record).await?);
                }
            }
            Some(target) => {
                let destination = self.follower.follow_record(client, &target.place, record).await?;
                target.destination = Some(destination);
                target.shape = record.after_commit_lsn().to_vec();
            }
            None => self.discover(client, record).await?,
        }
        Ok(())
    }

    /// Per table: COPY into its staging table, then one statement per kind present.
    async fn apply_staged(&mut self, client: &Client) -> Result<(), SinkError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        let tables: Vec<Vec<u8>> = self
            .targets
            .iter()
            .filter(|(_, target)| target.destination.is_some() && !target.batch.is_empty())
            .map(|(table, _)| table.clone())
            .collect();
        let isolate = self.on_error == OnTableError::Isolate;
        for table in tables {
            let applied = match self.targets.get_mut(&table) {
                Some(Target { destination: Some(destination), batch, .. }) if isolate => {
                    // Pipelined: the table's savepoint is queued ahead of its first statement.
                    let savepoint = client.batch_execute(isolation::SAVEPOINT);
                    match tokio::join!(
                        savepoint,
                        apply_table(client, destination, batch, Some(isolation::ROLLBACK))
                    ) {
                        (Err(error), _) => return Err(error.into()),
                        (Ok(()), applied) => applied,
                    }
                }
                Some(Target { destination: Some(destination), batch, .. }) => {
                    apply_table(client, destination, batch, None).await
                }
                _ => Ok(()),
            };
            self.settle(client, &table, applied).await?;
        }
        Ok(())
    }
}

/// One table's staged changes: a few whole rows as guarded upserts
/// (`few_rows`), new rows straight in with `COPY`, else `COPY` into its
/// staging table and one statement per kind present. An
/// error names the statement that failed, for the isolation's reason.
/// `rollback`: how to undo the new rows' `COPY` when it meets an existing
/// key (the table's savepoint, taken just before); without one, the `COPY`
/// runs under a savepoint of its own.
async fn apply_table(
    client: &Client,
    destination: &mut Destination,
    batch: &mut TableBatch,
    rollback: Option<&str>,
) -> Result<(), SinkError> {
    let quoted = destination.quoted.clone();
    let failed = |what: &str| {
        let statement = format!("{what} {quoted}");
        move |error| SinkError::Write { statement, error }
    };
    if let Some(rows) = batch.few_upserts(few_rows::FEW_ROWS) {
        few_rows::upsert(client, &destination.upsert_row, &rows).await.map_err(failed("the upserts into"))?;
        batch.clear();
        return Ok(());
    }
    // New rows: COPY them straight in. A row that exists (a replay) fails
    // the COPY on the key, and the batch takes the guarded path.
    if let Some(Copied::Written) = new_rows::copy(client, destination, batch, rollback).await? {
        batch.clear();
        return Ok(());
    }
    let (rows, kinds) = batch.take_staging(&destination.key_positions);
    let staging = destination.staging(client).await.map_err(failed("the staging table of"))?;
    copy_rows(client, &staging.copy_in, rows).await.map_err(failed("the COPY into the staging table of"))?;
    // Moves read the rows under their old keys, so they go before the deletes.
    for (count, statement, what) in [
        (kinds.moves, &staging.moves, "the key changes of"),
        (kinds.deletes, &staging.deletes, "the deletes from"),
        (kinds.upserts, &staging.upserts, "the upserts into"),
        (kinds.keeping_toast, &staging.updates_keeping_toast, "the updates keeping TOAST values of"),
    ] {
        if count > 0 {
            client.execute(statement, &[]).await.map_err(failed(what))?;
        }
    }
    client.batch_execute(&format!("TRUNCATE {}", staging.stage)).await?;
    Ok(())
}

/// The end of a copy that reconciles: the rows it did not write and the
/// stream did not change since the copy's start (`_walpipe_lsn` older, or
/// NULL) are gone from the source.
async fn remove_uncopied(client: &Client, target: &Target, record: &Record) -> Result<(), SinkError> {
    let since = record.values_from_start().first().map(|v| String::from_utf8_lossy(v).into_owned());
    let Some(since) = since.filter(|since| since.parse::<crate::position::Position>().is_ok()) else {
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
