//! The Postgres sink: rows and the job's checkpoint in one sink
//! transaction. Two modes: a mirror (each destination table holds the
//! current state of each source row) and a changelog (every change as a
//! row).
//!
//! ```text
//!  open:   destination tables created when missing; attribute numbers seeded (mirror)
//!  copy:   copy.rs (the destination takes the catalog's shape first, mirror)
//!  stream: commit_loop.rs, with mirror_writer.rs (per-key compaction, staging,
//!          follow.rs for new shapes) or changelog.rs
//! ```
//!
//! Invariants: destination tables are created only when missing, so a
//! restart never touches the rows already there; the sink streams on a
//! session of its own, so the runner's session stays free for the
//! checkpoint.

pub mod batch;
pub mod changelog;
mod commit_loop;
mod copied;
mod copied_in;
mod copy;
mod deferred_key;
mod durability;
pub mod evolve;
mod few_rows;
pub mod follow;
pub mod isolation;
pub mod mirror_writer;
mod new_rows;
pub mod record;
pub mod schema;
mod uncommitted;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use self::changelog::ChangelogWriter;
use self::commit_loop::CommitLoop;
use self::commit_loop::Writer;
use self::follow::{Follower, Place};
use self::mirror_writer::{Discovery, Mapping, MirrorWriter};
use super::settings::{SinkMode, SinkSettings};
use crate::change::encode::JsonLines;
use crate::change::mirror_records::MirrorRecords;
use crate::metrics::JobMetrics;
use crate::names::TableName;
use crate::pg::conninfo::ConnInfo;
pub use crate::sink::SinkError;
use crate::sink::{Driving, Opening, Sink};
use crate::source::copy::{Snapshot, SnapshotError};
use crate::source::table::{ColumnHistory, SourceTable};

/// Where a job's rows go, by mode.
enum Mode {
    /// By source table `schema.name`.
    Mirror(HashMap<String, Place>),
    Changelog(ChangelogWriter),
}

pub struct Postgres {
    info: ConnInfo,
    client: Client,
    mode: Mode,
    spec: SinkSettings,
    metrics: Arc<JobMetrics>,
    history: Arc<dyn ColumnHistory>,
}

impl Sink for Postgres {
    type Target = ConnInfo;
    const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
    const URL_FORM: &'static str = "postgres://...";
    const HOLDS_CHECKPOINT: bool = true;
    /// A mirror upserts and deletes by key (a changelog does not need one:
    /// see `JobSpec::needs_keys`).
    const NEEDS_KEYS: bool = true;

    fn parse(url: &str) -> Result<ConnInfo, String> {
        ConnInfo::parse(url).map_err(|e| e.to_string())
    }

    async fn open(target: &ConnInfo, opening: &Opening<'_>) -> Result<Self, SinkError> {
        let Opening { settings: spec, metrics, tables, history, .. } = opening;
        let client = crate::pg::sql::connect(target, "the sink").await?;
        let mode = match spec.sink_mode {
            SinkMode::Mirror => Mode::Mirror(ensure_mirror(spec, &client, tables).await?),
            SinkMode::Changelog => Mode::Changelog(ensure_changelog(spec, &client, tables).await?),
        };
        Ok(Postgres {
            info: target.clone(),
            client,
            mode,
            spec: (*spec).clone(),
            metrics: (*metrics).clone(),
            history: (*history).clone(),
        })
    }

    async fn copy(&mut self, snapshot: &Snapshot<'_>) -> Result<u64, SnapshotError> {
        match &mut self.mode {
            Mode::Mirror(places) => {
                // A copy replaces every row: the destination takes the catalog's shape first.
                let mut follower = follower(&self.spec, &self.metrics, &self.history);
                for table in snapshot.tables {
                    if let Some(place) = places.get(&table.qualified()) {
                        follower.follow_catalog(&self.client, place, table).await?;
                    }
                }
                copy::copy_mirror(snapshot, &self.info, places).await
            }
            Mode::Changelog(writer) => {
                snapshot.copy_as_lines(&mut copy::ChangelogLines { sink: &self.client, writer }).await
            }
        }
    }

    async fn start_over(&mut self) -> Result<(), SinkError> {
        if let Mode::Mirror(places) = &mut self.mode {
            let destinations: Vec<String> = places.values().map(|place| place.destination.quoted()).collect();
            if !destinations.is_empty() {
                self.client.batch_execute(&format!("TRUNCATE {}", destinations.join(", "))).await?;
            }
            // Every table is copied again: an isolated one's empty rebuild replaces it now.
            for place in places.values_mut() {
                if let Some(live) = place.replaces.take() {
                    isolation::swap(&self.client, &place.destination, &live).await?;
                    crate::checkpoint::marks::end_isolation(&self.client, &self.spec.name, &place.source)
                        .await?;
                    place.destination = live;
                }
            }
        }
        Ok(())
    }

    async fn stream<D: Driving>(self, driving: D) -> D::Outcome {
        let Postgres { client, mode, spec, metrics, history, .. } = self;
        match mode {
            Mode::Mirror(places) => {
                let options = mirror_writer::Options {
                    discovery: discovery(&spec),
                    mapping: mapping(&spec),
                    on_error: spec.on_table_error,
                    metrics: metrics.clone(),
                };
                let writer = MirrorWriter::new(places, follower(&spec, &metrics, &history), options);
                let sink = commit_loop(client, &spec, writer, metrics);
                driving.drive(MirrorRecords, |ends| sink.run(ends)).await
            }
            Mode::Changelog(writer) => {
                let sink = commit_loop(client, &spec, writer, metrics);
                driving.drive(JsonLines, |ends| sink.run(ends)).await
            }
        }
    }
}

fn commit_loop<W: Writer>(
    client: Client,
    spec: &SinkSettings,
    writer: W,
    metrics: Arc<JobMetrics>,
) -> CommitLoop<W> {
    CommitLoop::new(client, &spec.name, &spec.slot, writer, spec.batch_size, spec.flush_interval, metrics)
}

/// The mirror destinations, created when missing.
async fn ensure_mirror(
    spec: &SinkSettings,
    sink: &Client,
    tables: &[SourceTable],
) -> Result<HashMap<String, Place>, tokio_postgres::Error> {
    let mut places = HashMap::new();
    let isolated: Vec<String> = crate::checkpoint::marks::recopy_needed(sink, &spec.name)
        .await?
        .into_iter()
        .filter(|mark| mark.isolated)
        .map(|mark| mark.table)
        .collect();
    for (index, table) in tables.iter().enumerate() {
        let (schema_name, name) = spec.destination(&table.schema, &table.name);
        let live = TableName::new(&schema_name, &name);
        // An isolated table is rebuilt beside its destination (see `isolation`).
        let (destination, replaces) = if isolated.contains(&table.qualified()) {
            (isolation::shadow_of(&live), Some(live))
        } else {
            (live, None)
        };
        let place = Place {
            source: TableName::new(&table.schema, &table.name),
            destination,
            stage_index: index,
            replaces,
        };
        schema::create(sink, table, &place.destination).await?;
        follow::seed_attnums(sink, &spec.name, &place, table).await?;
        mirror_writer::seed_identity(sink, &spec.name, &table.qualified(), table.relid).await?;
        places.insert(table.qualified(), place);
    }
    Ok(places)
}

/// The changelog tables, created when missing.
async fn ensure_changelog(
    spec: &SinkSettings,
    sink: &Client,
    tables: &[SourceTable],
) -> Result<ChangelogWriter, tokio_postgres::Error> {
    let mut logs = HashMap::new();
    for table in tables {
        let (schema_name, name) = spec.destination(&table.schema, &table.name);
        logs.insert(table.qualified(), changelog::ensure(sink, &schema_name, &name).await?);
    }
    Ok(ChangelogWriter::new(logs, discovery(spec)))
}

/// Where a table first seen in the stream goes, when the job takes every
/// table of schema public (its publication then captures tables created later).
fn discovery(spec: &SinkSettings) -> Option<Discovery> {
    let spec = spec.clone();
    spec.captures_all_tables.then(|| {
        Box::new(move |source: &TableName| {
            let (schema, name) = spec.destination(&source.schema, &source.name);
            TableName { schema, name }
        }) as Discovery
    })
}

/// The destination a mapping gives a source table, if one does.
fn mapping(spec: &SinkSettings) -> Mapping {
    let mappings = spec.table_mappings.clone();
    Box::new(move |source: &TableName| {
        mappings.get(&source.qualified()).map(|(schema, name)| TableName::new(schema, name))
    })
}

/// What makes mirror destinations follow their source tables' shapes.
fn follower(spec: &SinkSettings, metrics: &Arc<JobMetrics>, history: &Arc<dyn ColumnHistory>) -> Follower {
    Follower::new(&spec.name, history.clone(), spec.schema_drop, metrics.clone())
}
