//! Where a job's rows go: the destination tables (mirror, changelog) or
//! the transport of a sink outside Postgres, made ready before streaming.
//!
//! Invariant: destination tables are created only when missing (`IF NOT
//! EXISTS`), so a restart never touches the rows already there.

use std::collections::HashMap;
use std::sync::Arc;

use super::JobError;
use super::spec::{JobSpec, SinkMode};
use crate::metrics::JobMetrics;
use crate::names::TableName;
use crate::secret::Secret;
use crate::sink::delivery::{Delivery, Outbox};
use crate::sink::postgres::changelog::{self, ChangelogWriter};
use crate::sink::postgres::follow::{self, Follower, Place};
use crate::sink::postgres::mirror_writer::Discovery;
use crate::sink::postgres::schema;
use crate::sink::{Outlet, SinkError};
use crate::source::catalog;

/// The transport of a sink outside Postgres; `None` for Postgres.
pub(super) fn outlet(
    spec: &JobSpec,
    metrics: &Arc<JobMetrics>,
    tables: &[catalog::SourceTable],
) -> Result<Option<Outlet>, SinkError> {
    // StarRocks: the URL's database and the source table's name, unless mapped.
    let destinations = tables
        .iter()
        .filter_map(|t| spec.table_mappings.get(&t.qualified()).map(|to| (t.qualified(), to.clone())))
        .collect();
    let secret = spec.signing_secret.as_ref().map(Secret::expose);
    Outlet::for_target(&spec.sink, &spec.name, secret, destinations, metrics)
}

/// Where a table first seen in the stream goes, when the job takes every
/// table of schema public (its publication then captures tables created later).
pub(super) fn discovery(spec: &JobSpec) -> Option<Discovery> {
    let spec = spec.clone();
    spec.tables.is_empty().then(|| {
        Box::new(move |source: &TableName| {
            let (schema, name) = spec.destination(&source.schema, &source.name);
            TableName { schema, name }
        }) as Discovery
    })
}

/// What makes mirror destinations follow their source tables' shapes.
pub(super) fn follower(spec: &JobSpec, metrics: &Arc<JobMetrics>) -> Follower {
    Follower::new(&spec.name, spec.source.clone(), spec.schema_drop, metrics.clone())
}

/// What the connection holding the checkpoint is called in messages.
pub(super) fn checkpoint_db_role(spec: &JobSpec) -> &'static str {
    if spec.sink.is_postgres() { "the sink" } else { "the state store" }
}

/// A delivery to `outlet`, keeping its ledger through `state` (a connection to the state store).
pub(super) async fn open_delivery(
    spec: &JobSpec,
    metrics: &Arc<JobMetrics>,
    outlet: Outlet,
    state: tokio_postgres::Client,
) -> Result<Delivery<Outlet>, JobError> {
    let outbox =
        Outbox { rules: spec.outbox.clone(), delete_from: spec.outbox_delete.then(|| spec.source.clone()) };
    Ok(Delivery::open(
        &spec.name,
        outlet,
        state,
        spec.batch_size,
        spec.flush_interval,
        metrics.clone(),
        Some(outbox),
    )
    .await?)
}

/// Where a job's rows go, by sink and mode.
pub(super) enum Targets {
    /// By source table `schema.name`.
    Mirror(HashMap<String, Place>),
    Changelog(ChangelogWriter),
    /// A sink outside Postgres.
    Delivery(Box<Outlet>),
}

impl Targets {
    /// Creates the destination tables the mode needs, unless they exist.
    pub(super) async fn ensure(
        spec: &JobSpec,
        metrics: &Arc<JobMetrics>,
        sink: &tokio_postgres::Client,
        tables: &[catalog::SourceTable],
    ) -> Result<Targets, JobError> {
        if let Some(outlet) = outlet(spec, metrics, tables)? {
            return Ok(Targets::Delivery(Box::new(outlet)));
        }
        Targets::ensure_in_postgres(spec, sink, tables).await.map_err(JobError::SinkSetup)
    }

    async fn ensure_in_postgres(
        spec: &JobSpec,
        sink: &tokio_postgres::Client,
        tables: &[catalog::SourceTable],
    ) -> Result<Targets, tokio_postgres::Error> {
        match spec.sink_mode {
            SinkMode::Mirror => {
                let mut places = HashMap::new();
                for (index, table) in tables.iter().enumerate() {
                    let (schema_name, name) = spec.destination(&table.schema, &table.name);
                    let place = Place {
                        source: TableName::new(&table.schema, &table.name),
                        destination: TableName::new(&schema_name, &name),
                        stage_index: index,
                    };
                    schema::create(sink, table, &place.destination).await?;
                    follow::seed_attnums(sink, &spec.name, &place, table).await?;
                    places.insert(table.qualified(), place);
                }
                Ok(Targets::Mirror(places))
            }
            SinkMode::Changelog => {
                let mut logs = HashMap::new();
                for table in tables {
                    let (schema_name, name) = spec.destination(&table.schema, &table.name);
                    logs.insert(table.qualified(), changelog::ensure(sink, &schema_name, &name).await?);
                }
                Ok(Targets::Changelog(ChangelogWriter::new(logs, discovery(spec))))
            }
        }
    }
}
