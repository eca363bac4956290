//! The MySQL/MariaDB source behind [`Source`].
//!
//! - No server-side object keeps a binlog reader's place: the stream's
//!   state is the job's checkpoint, and the stream is lost when the binlog
//!   file it points into was purged (`stream_state`).
//! - A new stream starts at the binlog position read under `FLUSH TABLES
//!   WITH READ LOCK`, with a transaction `WITH CONSISTENT SNAPSHOT` opened
//!   before the lock is released: the blocking snapshot. Writes wait for
//!   the lock for as long as it is held (and, the classic outage, for as
//!   long as any running query delays it).
//! - A new stream that needs no snapshot (the chunked strategy, the
//!   incremental copy) starts at the binlog position read without a lock.
//!   The copies then run beside the stream (`chunks`), placed at their
//!   watermarks.

use std::collections::HashSet;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use tokio::sync::Mutex;

use super::catalog::{self, CatalogError, ReplicaRole};
use super::chunks::copier;
use super::position::{BinlogPosition, base_name};
use super::snapshot::BlockingSnapshot;
use super::stream::BinlogChanges;
use super::target::MysqlTarget;
use super::transaction::Shape;
use crate::change::Encoding;
use crate::chunked::progress::TableCopy;
use crate::lifecycle::ErrorKind;
use crate::metrics::JobMetrics;
use crate::names::TableName;
use crate::pg::ConnInfo;
use crate::position::Position;
use crate::source::chunk_copier::Copier;
use crate::source::copy::SnapshotReader;
use crate::source::outbox_cleanup::RowDeleter;
use crate::source::setup::{
    Background, NewStream, SetupError, Source, SourceSettings, Started, StreamState, Streaming,
};
use crate::source::table::{ColumnHistory, OfferedTable, SourceAttribute, SourceTable};
use crate::source::{BoxFuture, ChangeStream};

/// How often a quiet server sends a heartbeat event.
const HEARTBEAT_NANOS: u64 = 1_000_000_000;

/// Why setting the MySQL source up failed; one sentence with the fix.
#[derive(Debug, thiserror::Error)]
pub enum MysqlSetupError {
    #[error("the MySQL source failed: {0}")]
    Server(#[from] mysql_async::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Requirement(String),
}

impl From<MysqlSetupError> for SetupError {
    fn from(error: MysqlSetupError) -> SetupError {
        let transient = match &error {
            MysqlSetupError::Server(mysql_async::Error::Server(_)) => false,
            MysqlSetupError::Server(_) => true,
            MysqlSetupError::Catalog(CatalogError::Query(mysql_async::Error::Server(_))) => false,
            MysqlSetupError::Catalog(CatalogError::Query(_)) => true,
            _ => false,
        };
        SetupError::new(transient, ErrorKind::Other, error)
    }
}

fn failed(error: impl Into<MysqlSetupError>) -> SetupError {
    SetupError::from(error.into())
}

pub struct MysqlSource {
    target: MysqlTarget,
    settings: SourceSettings,
    conn: Conn,
    /// The binlog files' base name (`binlog` of `binlog.000042`).
    base: String,
    /// The blocking snapshot's transaction, until the stream starts.
    snapshot: Option<Arc<Mutex<Conn>>>,
    /// The captured tables, as `tables` read them.
    captured: Vec<SourceTable>,
}

pub struct MysqlStarted {
    target: MysqlTarget,
    settings: SourceSettings,
    binlog: mysql_async::BinlogStream,
    from: Position,
    /// The captured tables' shapes as the catalog had them at the start
    /// (see `BinlogChanges::new`).
    shapes: Vec<Shape>,
    metrics: Arc<JobMetrics>,
}

async fn connect(target: &MysqlTarget) -> Result<Conn, MysqlSetupError> {
    Ok(target.connect().await?)
}

/// The settings a row-based CDC needs, each with its fix.
pub async fn requirements(conn: &mut Conn) -> Result<Vec<Result<String, String>>, mysql_async::Error> {
    let mut found = Vec::new();
    let variables: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata')",
        )
        .await?;
    let value = |name: &str| {
        variables.iter().find(|(n, _)| n == name).map_or(String::new(), |(_, v)| v.to_uppercase())
    };
    for (name, wanted) in [
        ("log_bin", "ON"),
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("binlog_row_metadata", "FULL"),
    ] {
        let now = value(name);
        found.push(if now == wanted {
            Ok(format!("{name} = {wanted}"))
        } else {
            Err(format!(
                "{name} = {now}, but walpipe needs {wanted}: set {name}={wanted} in the server's configuration (and restart it for log_bin)"
            ))
        });
    }
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let granted = |privilege: &str| {
        grants.iter().any(|g| {
            let g = g.to_uppercase();
            g.contains("ALL PRIVILEGES ON *.*") || (g.contains(privilege) && g.contains(" ON *.*"))
        })
    };
    for privilege in ["REPLICATION SLAVE", "REPLICATION CLIENT", "RELOAD"] {
        found.push(
            if granted(privilege) || (privilege == "REPLICATION CLIENT" && granted("BINLOG MONITOR")) {
                Ok(format!("the user has {privilege}"))
            } else {
                Err(format!("the user lacks {privilege}: run GRANT {privilege} ON *.* TO the walpipe user"))
            },
        );
    }
    Ok(found)
}

/// The binlog position now: `SHOW MASTER STATUS`.
async fn current_position(conn: &mut Conn) -> Result<(String, BinlogPosition), MysqlSetupError> {
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let row = row.ok_or_else(|| {
        MysqlSetupError::Requirement(
            "the binlog is off: set log_bin=ON in the server's configuration and restart it".into(),
        )
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let offset: u64 = row.get(1).unwrap_or_default();
    let position = BinlogPosition::in_file(&file, offset).ok_or_else(|| {
        MysqlSetupError::Requirement(format!(
            "SHOW MASTER STATUS gave a binlog file walpipe cannot read: {file}"
        ))
    })?;
    Ok((base_name(&file).to_string(), position))
}

impl Source for MysqlSource {
    type Target = MysqlTarget;
    const SCHEMES: &'static [&'static str] = &["mysql", "mariadb"];
    const URL_FORM: &'static str = "mysql://user:password@host:3306/db";
    const CHUNKED_COPY: bool = true;
    type Started = MysqlStarted;

    fn parse(url: &str) -> Result<MysqlTarget, String> {
        MysqlTarget::parse(url)
    }

    async fn open(target: &MysqlTarget, settings: &SourceSettings) -> Result<Self, SetupError> {
        let mut conn = connect(target).await.map_err(failed)?;
        for requirement in requirements(&mut conn).await.map_err(failed)? {
            requirement.map_err(|fix| failed(MysqlSetupError::Requirement(fix)))?;
        }
        let (base, _) = current_position(&mut conn).await.map_err(failed)?;
        Ok(MysqlSource {
            target: target.clone(),
            settings: settings.clone(),
            conn,
            base,
            snapshot: None,
            captured: Vec::new(),
        })
    }

    fn monitor(target: &MysqlTarget, metrics: &Arc<JobMetrics>) -> Background {
        Background::spawn(super::monitor::run(target.clone(), metrics.clone()))
    }

    fn state_store(_target: &MysqlTarget) -> Option<ConnInfo> {
        None
    }

    async fn remove(_target: &MysqlTarget, _settings: &SourceSettings) -> Result<(), SetupError> {
        // Nothing on the server keeps a binlog reader's place.
        Ok(())
    }

    async fn offered_tables(target: &MysqlTarget) -> Result<Vec<OfferedTable>, SetupError> {
        let mut conn = connect(target).await.map_err(failed)?;
        catalog::offered(&mut conn, &target.database).await.map_err(|e| failed(MysqlSetupError::Server(e)))
    }

    async fn tables(&mut self, needs_keys: bool) -> Result<Vec<SourceTable>, SetupError> {
        let tables = catalog::tables(&mut self.conn, &self.target.database, &self.settings.tables)
            .await
            .map_err(failed)?;
        if let Some(keyless) = tables.iter().find(|t| needs_keys && t.is_keyless()) {
            return Err(failed(MysqlSetupError::Requirement(format!(
                "table {} has no primary key, which the mirror needs to apply updates and deletes: add one, or capture it into a changelog (WALPIPE_SINK_MODE=changelog)",
                keyless.qualified()
            ))));
        }
        self.captured = tables.clone();
        Ok(tables)
    }

    async fn prepare(&mut self, _tables: &[SourceTable]) -> Result<(), SetupError> {
        Ok(())
    }

    async fn stream_state(&mut self, applied: Option<Position>) -> Result<StreamState, SetupError> {
        let Some(applied) = applied else { return Ok(StreamState::Missing) };
        let files: Vec<mysql_async::Row> = self.conn.query("SHOW BINARY LOGS").await.map_err(failed)?;
        let wanted = BinlogPosition::from(applied).file_name(&self.base);
        let kept = files.iter().any(|row| row.get::<String, _>(0).as_deref() == Some(wanted.as_str()));
        Ok(if kept {
            StreamState::Ready { confirmed: None }
        } else {
            StreamState::Lost {
                why: format!(
                    "the binlog file {wanted}, which holds the job's position {applied}, was purged (binlog_expire_logs_seconds, or PURGE BINARY LOGS)"
                ),
                start_over: "delete the job's checkpoint (DELETE FROM walpipe.checkpoints)".into(),
            }
        })
    }

    async fn forget_stream(&mut self) -> Result<(), SetupError> {
        Ok(())
    }

    async fn new_stream(&mut self, _temporary: bool, snapshot: bool) -> Result<NewStream, SetupError> {
        if !snapshot {
            let (_, position) = current_position(&mut self.conn).await.map_err(failed)?;
            tracing::info!(job = %self.settings.job, at = %Position::from(position), "the stream starts at the binlog position now; no lock was taken");
            return Ok(NewStream { consistent_point: position.into(), snapshot: None });
        }
        let mut snapshot = connect(&self.target).await.map_err(failed)?;
        snapshot.query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(failed)?;
        let locked = async {
            let (_, position) = current_position(&mut snapshot).await?;
            snapshot.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await?;
            Ok::<_, MysqlSetupError>(position)
        }
        .await;
        snapshot.query_drop("UNLOCK TABLES").await.map_err(failed)?;
        let position = locked.map_err(failed)?;
        tracing::info!(job = %self.settings.job, at = %Position::from(position), "the blocking snapshot is open: writes waited for FLUSH TABLES WITH READ LOCK until the binlog position was read");
        self.snapshot = Some(Arc::new(Mutex::new(snapshot)));
        Ok(NewStream { consistent_point: position.into(), snapshot: Some("blocking".into()) })
    }

    fn snapshot_reader<'a>(&'a self, _snapshot: &'a str) -> Box<dyn SnapshotReader + 'a> {
        Box::new(BlockingSnapshot { conn: self.snapshot.clone(), opts: self.target.opts.clone() })
    }

    async fn record_catalog(&mut self, _store: &tokio_postgres::Client) -> Result<(), SetupError> {
        Ok(())
    }

    fn watch_catalog(&self, _metrics: &Arc<JobMetrics>, _captured: &[SourceTable]) -> Background {
        Background::spawn(std::future::ready(()))
    }

    fn history(&self) -> Arc<dyn ColumnHistory> {
        Arc::new(NoHistory)
    }

    fn row_deleters(&self) -> Arc<dyn Fn() -> Box<dyn RowDeleter> + Send + Sync> {
        super::outbox_delete::deleters(self.target.clone())
    }

    async fn start(self, from: Position, metrics: &Arc<JobMetrics>) -> Result<MysqlStarted, SetupError> {
        let MysqlSource { target, settings, mut conn, base, snapshot, captured } = self;
        drop(snapshot);
        let mut shapes = Vec::with_capacity(captured.len());
        for table in &captured {
            let formats = catalog::formats(&mut conn, &table.schema, &table.name).await.map_err(failed)?;
            let columns = formats.into_iter().map(|(name, format)| {
                let is_key = table.key.contains(&name);
                (name, format, is_key)
            });
            shapes.push(Shape::new(table.relid, &table.schema, &table.name, columns.collect()));
        }
        drop(conn);
        let mut binlog = connect(&target).await.map_err(failed)?;
        // MariaDB sends its GTID events to a reader that says it reads them.
        binlog.query_drop("SET @mariadb_slave_capability = 4").await.map_err(failed)?;
        binlog
            .query_drop(format!("SET @master_heartbeat_period = {HEARTBEAT_NANOS}"))
            .await
            .map_err(failed)?;
        let at = BinlogPosition::from(from);
        let file = at.file_name(&base);
        let request = BinlogStreamRequest::new(catalog::replica_id(&settings.job, ReplicaRole::Stream))
            .with_filename(file.as_bytes())
            .with_pos(u64::from(at.offset));
        let binlog = binlog.get_binlog_stream(request).await.map_err(failed)?;
        Ok(MysqlStarted { target, settings, binlog, from, shapes, metrics: metrics.clone() })
    }
}

impl MysqlStarted {
    /// The change stream of every table of the URL's database, up to
    /// `end_at` (`walpipe tail`).
    pub fn tail<E: Encoding>(self, encoding: E, end_at: Option<Position>) -> BinlogChanges<E> {
        let MysqlStarted { target, binlog, from, shapes, .. } = self;
        BinlogChanges::new(binlog, encoding, HashSet::new(), target.database, from, shapes).ending_at(end_at)
    }
}

/// The binlog position being written now.
pub async fn position_now(target: &MysqlTarget) -> Result<Position, SetupError> {
    let mut conn = connect(target).await.map_err(failed)?;
    let (_, position) = current_position(&mut conn).await.map_err(failed)?;
    Ok(position.into())
}

impl Started for MysqlStarted {
    fn changes<E: Encoding>(
        self,
        encoding: E,
        copies: Vec<(SourceTable, TableCopy)>,
    ) -> Streaming<impl ChangeStream> {
        let MysqlStarted { target, settings, binlog, from, shapes, metrics } = self;
        let captured: HashSet<String> = settings.tables.iter().map(TableName::qualified).collect();
        let mut changes =
            BinlogChanges::new(binlog, encoding, captured, target.database.clone(), from, shapes);
        let mut copying = None;
        if !copies.is_empty() {
            let tables: Vec<String> = copies.iter().map(|(table, _)| table.qualified()).collect();
            let copier = Copier { metrics, tables: copies, limits: copier::LIMITS, how: copier::HOW };
            let (feed, task) = copier.spawn(copier::open(target, settings.job));
            changes = changes.with_chunks(feed, tables);
            copying = Some(task);
        }
        Streaming { changes, copying, chores: Vec::new() }
    }
}

/// MySQL's catalog keeps no column identity across renames that walpipe
/// reads: a renamed column is a drop and an add to the mirror, which marks
/// the table for a copy when its values cannot be known.
struct NoHistory;

impl ColumnHistory for NoHistory {
    fn columns_now<'a>(
        &'a self,
        _table: &'a TableName,
    ) -> BoxFuture<'a, Result<Vec<SourceAttribute>, String>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}
