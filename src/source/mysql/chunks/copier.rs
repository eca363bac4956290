//! The MySQL source's chunk reader for the neutral copier
//! ([`crate::source::chunk_copier`]): chunks read on a session of their
//! own, each between its watermarks (`reader`), after the signal table is
//! made sure of.

use std::time::Duration;

use mysql_async::Conn;

use super::ChunkError;
use super::reader::{ChunkRead, read_chunk};
use super::signal::Signal;
use crate::chunked::progress::TableCopy;
use crate::source::chunk_copier::{self, ChunkLimits, ChunkReader};
use crate::source::mysql::catalog;
use crate::source::mysql::target::MysqlTarget;
use crate::source::table::SourceTable;

/// The chunks' size. A chunk's query holds no lock, so the budget only
/// bounds what one chunk holds in memory and how long its window is.
pub const LIMITS: ChunkLimits =
    ChunkLimits { budget: Duration::from_secs(1), rows: (1_000, 200_000), max_bytes: 6 * 1024 * 1024 };

/// How the log names this copy.
pub const HOW: &str = "copying in chunks between watermarks, no lock taken";

/// What the stream takes this source's chunks from.
pub type ChunkFeed = chunk_copier::ChunkFeed<ChunkRead>;

/// Reads chunks on its own session, writing their watermarks.
pub struct MysqlChunks {
    conn: Conn,
    signal: Signal,
}

/// Connects the session that reads chunks, and makes the signal table if it is missing.
pub async fn open(target: MysqlTarget, job: String) -> Result<MysqlChunks, ChunkError> {
    let mut conn = target.connect().await.map_err(ChunkError::Connect)?;
    let signal = Signal::new(&target.database, &job);
    signal.ensure(&mut conn).await.map_err(ChunkError::Signal)?;
    Ok(MysqlChunks { conn, signal })
}

chunk_copier::read_chunk_fields!(ChunkRead);

impl ChunkReader for MysqlChunks {
    type Chunk = ChunkRead;
    type Error = ChunkError;

    /// InnoDB's row estimate.
    async fn estimate(&mut self, table: &SourceTable) -> Result<i64, ChunkError> {
        catalog::estimate(&mut self.conn, &table.schema, &table.name)
            .await
            .map_err(|source| ChunkError::Source { table: table.qualified(), source })
    }

    async fn read(
        &mut self,
        table: &SourceTable,
        start: &TableCopy,
        limit: usize,
        token: &str,
    ) -> Result<ChunkRead, ChunkError> {
        read_chunk(&mut self.conn, &self.signal, table, start, limit, token).await
    }
}
