//! Mirror mode: each destination table holds the current state of each
//! source row (see the module above for the commit rules).

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::batch::{Admit, Record, TableBatch};
use super::copied::{CopiedRecord, CopiedRows};
use super::follow::{Follower, Place};
use super::schema::Destination;
use super::{SinkError, Writer};
use crate::change::mirror_records::unescape;
use crate::names::TableName;

/// One destination and its pending rows.
struct Target {
    place: Place,
    /// Its statements for the table's current shape: set by the shape record
    /// that comes before the table's first change in a session.
    destination: Option<Destination>,
    batch: TableBatch,
    /// Rows of a chunked copy, applied before anything staged after them.
    copied: CopiedRows,
}

pub struct MirrorWriter {
    /// By source table, as escaped in mirror records (`schema.name`).
    targets: HashMap<Vec<u8>, Target>,
    follower: Follower,
    /// Where a table first seen in the stream goes, when the job takes every
    /// table of its schema (`None`: only the tables it started with).
    discovery: Option<Discovery>,
    pending: usize,
    /// Some target holds copied rows: they go in before any other record is staged.
    copied_pending: bool,
}

/// The destination of a source table the job did not know when it started.
pub type Discovery = Box<dyn Fn(&TableName) -> TableName + Send + Sync>;

impl MirrorWriter {
    /// `places`: by source table `schema.name`.
    pub fn new(places: HashMap<String, Place>, follower: Follower, discovery: Option<Discovery>) -> Self {
        let targets = places
            .into_iter()
            .map(|(table, place)| {
                let mut escaped = Vec::new();
                crate::change::mirror_records::escape(&mut escaped, table.as_bytes());
                (escaped, Target::new(place))
            })
            .collect();
        MirrorWriter { targets, follower, discovery, pending: 0, copied_pending: false }
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
            let target = Target { destination: Some(destination), ..Target::new(place) };
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
        Target { place, destination: None, batch: TableBatch::default(), copied: CopiedRows::default() }
    }
}

impl MirrorWriter {
    /// Keeps a copied row for its table's next apply; what was staged before it goes in first.
    async fn add_copied(&mut self, client: &Client, line: &Bytes) -> Result<(), SinkError> {
        let record = CopiedRecord::parse(line)
            .ok_or_else(|| SinkError::Record(String::from_utf8_lossy(&line[..line.len().min(80)]).into()))?;
        if self.pending > 0 && !self.copied_pending {
            self.apply(client).await?;
        }
        // A table the job does not mirror: skip it.
        if let Some(target) = self.targets.get_mut(record.table) {
            target.copied.push(line, &record);
            self.pending += 1;
            self.copied_pending = true;
        }
        Ok(())
    }

    /// A target's copied rows: COPY them straight in; if some exist already
    /// (the stream wrote them first), stage them all as guarded upserts.
    async fn apply_copied(client: &Client, target: &mut Target) -> Result<(), SinkError> {
        let (rows, lines) = target.copied.take();
        if lines.is_empty() {
            return Ok(());
        }
        let Some(destination) = &target.destination else {
            return Err(SinkError::Record(format!(
                "a copied row of {} came before its shape",
                target.place.source
            )));
        };
        client.batch_execute("SAVEPOINT walpipe_copied_rows").await?;
        match copy(client, &destination.copy_new_rows, rows).await {
            Ok(()) => {
                client.batch_execute("RELEASE SAVEPOINT walpipe_copied_rows").await?;
                return Ok(());
            }
            Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                client.batch_execute("ROLLBACK TO SAVEPOINT walpipe_copied_rows").await?;
            }
            Err(error) => return Err(error.into()),
        }
        for line in lines {
            let record = Record::parse(line).map_err(SinkError::Record)?;
            target
                .batch
                .add(&record, destination.width, &destination.key_positions)
                .map_err(SinkError::Record)?;
        }
        target.batch.guarded_only();
        Ok(())
    }
}

impl Writer for MirrorWriter {
    async fn add(&mut self, client: &Client, line: Bytes) -> Result<bool, SinkError> {
        if CopiedRecord::parse(&line).is_some() {
            self.add_copied(client, &line).await?;
            return Ok(true);
        }
        if self.copied_pending {
            self.apply(client).await?;
        }
        let record = Record::parse(line).map_err(SinkError::Record)?;
        match record.op() {
            b'M' => {}
            b'S' => {
                // Rows staged under the old shape are written with its statements first.
                self.apply(client).await?;
                match self.targets.get_mut(record.table()) {
                    Some(target) => {
                        let destination = self.follower.follow_record(client, &target.place, &record).await?;
                        target.destination = Some(destination);
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

    /// Per table: COPY into its staging table, then one statement per kind present.
    async fn apply(&mut self, client: &Client) -> Result<(), SinkError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        self.copied_pending = false;
        for target in self.targets.values_mut() {
            Self::apply_copied(client, target).await?;
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

    fn pending(&self) -> usize {
        self.pending
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
