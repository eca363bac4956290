//! The Postgres source behind [`Source`]: a SQL session for the catalog and
//! the publication, a replication connection for the slot, and the stream.
//! When the stream starts, the SQL session goes on answering the column
//! history's questions ([`CatalogHistory::adopt`]).
//!
//! Invariants (beyond the seam's):
//! - The replication connection that created a slot stays idle until
//!   [`Source::start`], so the snapshot it exported stays usable for the copy.
//! - The publication is ensured before a slot is created (`prepare` comes
//!   first), so the slot sends every captured table's changes from its start.
//! - The replication connection never opens a captured table (the catalog
//!   questions go to the SQL session): a walsender would describe its first
//!   decoded changes with what it loaded ([`preflight::published`]).

use std::sync::Arc;

use tokio_postgres::Client;

use super::assembler::Assembler;
use super::changes::Changes;
use super::chunks::copier;
use super::chunks::watch::KeyWatch;
use super::column_history::CatalogHistory;
use super::heartbeat::heartbeat;
use super::relations::{PrimaryKeys, Signatures};
use super::setup_error::SetupFailure;
use super::snapshot::ExportedSnapshot;
use super::{
    ReplicationStream, catalog, outbox_delete, partition_watch, preflight, publication, slot_monitor,
};
use crate::change::Encoding;
use crate::chunked::progress::TableCopy;
use crate::metrics::JobMetrics;
use crate::names::{TableName, quote_ident, quote_literal};
use crate::pg::{ConnInfo, Connection, sql};
use crate::position::Position;
use crate::source::ChangeStream;
use crate::source::chunk_copier::Copier;
use crate::source::copy::SnapshotReader;
use crate::source::outbox_cleanup::RowDeleter;
use crate::source::setup::{
    Background, NewStream, SetupError, Source, SourceSettings, Started, StreamState, Streaming,
};
use crate::source::table::{ColumnHistory, OfferedTable, SourceTable};

/// Streamed transactions kept in memory before spilling to disk.
const SPILL_MEMORY_CAP: usize = 16 * 1024 * 1024;

pub struct PostgresSource {
    info: ConnInfo,
    settings: SourceSettings,
    /// The catalog, the publication, and the copy's estimates.
    sql: Client,
    /// Slots, and the stream.
    replication: Connection,
    /// Takes the SQL session when the stream starts.
    history: Arc<CatalogHistory>,
}

/// A started stream: the slot's messages, not yet assembled into lines.
pub struct PostgresStarted {
    info: ConnInfo,
    settings: SourceSettings,
    metrics: Arc<JobMetrics>,
    stream: ReplicationStream,
    primary_keys: PrimaryKeys,
    /// The published tables' shapes when the stream started.
    signatures: Signatures,
}

fn failed(failure: impl Into<SetupFailure>) -> SetupError {
    SetupError::from(failure.into())
}

impl Source for PostgresSource {
    type Target = ConnInfo;
    const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
    const URL_FORM: &'static str = "postgres://user:password@host:5432/db";
    const CHUNKED_COPY: bool = true;
    type Started = PostgresStarted;

    fn parse(url: &str) -> Result<ConnInfo, String> {
        ConnInfo::parse(url).map_err(|e| e.to_string())
    }

    async fn open(target: &ConnInfo, settings: &SourceSettings) -> Result<Self, SetupError> {
        // Both sessions start at once; the SQL session's error is the one told.
        let (sql, replication) =
            tokio::join!(sql::connect(target, "the source"), Connection::connect(target));
        let sql = sql.map_err(failed)?;
        let replication = replication.map_err(failed)?;
        let history = Arc::new(CatalogHistory::new(target.clone()));
        Ok(PostgresSource { info: target.clone(), settings: settings.clone(), sql, replication, history })
    }

    fn monitor(target: &ConnInfo, metrics: &Arc<JobMetrics>) -> Background {
        Background::spawn(slot_monitor::run(target.clone(), metrics.clone()))
    }

    fn state_store(target: &ConnInfo) -> Option<ConnInfo> {
        Some(target.clone())
    }

    async fn remove(target: &ConnInfo, settings: &SourceSettings) -> Result<(), SetupError> {
        let mut source = PostgresSource::open(target, settings).await?;
        if source.stream_state(None).await? != StreamState::Missing {
            source.forget_stream().await?;
        }
        let drop = format!("DROP PUBLICATION IF EXISTS {}", quote_ident(&settings.publication));
        source.sql.batch_execute(&drop).await.map_err(failed)?;
        tracing::info!(job = %settings.job, slot = %settings.slot, publication = %settings.publication, "dropped the slot and the publication");
        Ok(())
    }

    async fn offered_tables(target: &ConnInfo) -> Result<Vec<OfferedTable>, SetupError> {
        let sql = sql::connect(target, "the source").await.map_err(failed)?;
        catalog::offered(&sql).await.map_err(failed)
    }

    async fn tables(&mut self, needs_keys: bool) -> Result<Vec<SourceTable>, SetupError> {
        let tables = catalog::tables(&self.sql, &self.settings.tables).await.map_err(failed)?;
        if needs_keys {
            catalog::require_keys(&tables).map_err(failed)?;
        }
        check_select(&self.sql, &tables).await.map_err(failed)?;
        Ok(tables)
    }

    async fn prepare(&mut self, tables: &[SourceTable]) -> Result<(), SetupError> {
        let every_table = self.settings.tables.is_empty();
        publication::ensure(&self.sql, &self.settings.publication, tables, every_table).await.map_err(failed)
    }

    async fn stream_state(&mut self, _applied: Option<Position>) -> Result<StreamState, SetupError> {
        let slot = self
            .replication
            .simple_query(&format!(
                "SELECT coalesce(wal_status, 'unknown') AS wal_status, confirmed_flush_lsn::text AS confirmed \
                 FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(&self.settings.slot)
            ))
            .await
            .map_err(failed)?;
        Ok(match slot.first("wal_status") {
            None => StreamState::Missing,
            Some("lost") => StreamState::Lost {
                why: "the slot was invalidated (wal_status = lost)".into(),
                start_over: format!(
                    "drop the slot {:?} and the job's checkpoint (DELETE FROM walpipe.checkpoints)",
                    self.settings.slot
                ),
            },
            Some(_) => {
                StreamState::Ready { confirmed: slot.first("confirmed").and_then(|lsn| lsn.parse().ok()) }
            }
        })
    }

    async fn forget_stream(&mut self) -> Result<(), SetupError> {
        self.replication.drop_slot(&self.settings.slot).await.map_err(failed)
    }

    /// The slot exports its snapshot whether or not it is asked for: it costs nothing.
    async fn new_stream(&mut self, temporary: bool, _snapshot: bool) -> Result<NewStream, SetupError> {
        let created = self.replication.create_slot(&self.settings.slot, temporary).await.map_err(failed)?;
        tracing::info!(slot = %self.settings.slot, consistent_point = %created.consistent_point, "created the slot");
        Ok(NewStream { consistent_point: created.consistent_point, snapshot: created.snapshot_name })
    }

    fn snapshot_reader<'a>(&'a self, snapshot: &'a str) -> Box<dyn SnapshotReader + 'a> {
        Box::new(ExportedSnapshot { source: &self.info, catalog: &self.sql, name: snapshot })
    }

    async fn record_catalog(&mut self, store: &Client) -> Result<(), SetupError> {
        partition_watch::record_current(&self.settings, &self.sql, store).await.map_err(|error| {
            SetupError::new(sql::is_transient(&error), crate::lifecycle::ErrorKind::Other, error)
        })
    }

    fn watch_catalog(&self, metrics: &Arc<JobMetrics>, captured: &[SourceTable]) -> Background {
        let captured = captured.iter().map(|t| TableName::new(&t.schema, &t.name)).collect();
        partition_watch::spawn(&self.info, &self.settings, metrics, captured)
    }

    fn history(&self) -> Arc<dyn ColumnHistory> {
        self.history.clone()
    }

    fn row_deleters(&self) -> Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync> {
        outbox_delete::deleters(self.info.clone())
    }

    async fn start(self, from: Position, metrics: &Arc<JobMetrics>) -> Result<PostgresStarted, SetupError> {
        let PostgresSource { info, settings, sql, mut replication, history } = self;
        let (slot, publication) = (&settings.slot, &settings.publication);
        // The replication session's checks and the catalog's question go at
        // once; the stream's errors are told first.
        let stream_checks = async {
            preflight::check_stream(&mut replication, slot, publication).await?;
            replication.status_interval().await
        };
        let (interval, published) = tokio::join!(stream_checks, preflight::published(&sql, publication));
        history.adopt(sql).await;
        let interval = interval.map_err(failed)?;
        let preflight::Published { primary_keys, signatures } = published.map_err(failed)?;
        let stream = replication.start_stream(slot, publication, from, interval).await.map_err(failed)?;
        Ok(PostgresStarted { info, settings, metrics: metrics.clone(), stream, primary_keys, signatures })
    }
}

impl Started for PostgresStarted {
    fn changes<E: Encoding>(
        self,
        encoding: E,
        copies: Vec<(SourceTable, TableCopy)>,
    ) -> Streaming<impl ChangeStream> {
        let PostgresStarted { info, settings, metrics, stream, primary_keys, signatures } = self;
        let mut assembler = Assembler::new(encoding, SPILL_MEMORY_CAP, None, primary_keys);
        let (chunks, copying) = if copies.is_empty() {
            (None, None)
        } else {
            // The key watch begins before the first chunk, as the merge rule needs.
            assembler = assembler.watching(KeyWatch::new(copies.iter().map(|(t, _)| t.qualified())));
            let copier =
                Copier { metrics: metrics.clone(), tables: copies, limits: copier::LIMITS, how: copier::HOW };
            let (feed, task) = copier.spawn(copier::open(info.clone()));
            (Some(feed), Some(task))
        };
        let assembler = assembler.writing_streamed_early(signatures);
        let chores = settings
            .heartbeat
            .map(|every| Background::spawn(heartbeat(info, settings.job.clone(), every, metrics)))
            .into_iter()
            .collect();
        Streaming { changes: Changes::new(stream, assembler, chunks), copying, chores }
    }
}

/// Every table must be readable: a copy (initial, or after a lost slot)
/// needs it, and failing at start is clearer than failing mid-incident.
async fn check_select(source: &Client, tables: &[SourceTable]) -> Result<(), SetupFailure> {
    let names: Vec<String> = tables.iter().map(SourceTable::quoted).collect();
    let row = source
        .query_one(
            "SELECT current_user::text, string_agg(t, ', ') FROM unnest($1::text[]) t WHERE NOT has_table_privilege(t, 'SELECT')",
            &[&names],
        )
        .await?;
    let user: String = row.try_get(0)?;
    match row.try_get::<_, Option<String>>(1)? {
        Some(tables) => Err(SetupFailure::NoSelect { tables, user: quote_ident(&user) }),
        None => Ok(()),
    }
}
