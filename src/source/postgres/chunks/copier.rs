//! The Postgres source's chunk reader for the neutral copier
//! ([`crate::source::chunk_copier`]): chunks read on a session of their own,
//! named apart in `pg_stat_activity`, each in its own short transaction
//! (`reader`).

use std::time::Duration;

use super::ChunkError;
use super::reader::{ChunkRead, read_chunk};
use crate::chunked::progress::TableCopy;
use crate::names::quote_literal;
use crate::pg::Connection;
use crate::pg::conninfo::ConnInfo;
use crate::source::chunk_copier::{self, ChunkLimits, ChunkReader};
use crate::source::table::SourceTable;

/// The chunks' size. The COPY text a chunk holds at most is 4 MiB (about).
/// Up to three chunks are in memory at once (one read ahead, one waiting
/// for its marker, one being written, whose lines a mirror keeps until its
/// `COPY` ends). A 5M-row copy peaked at 108 to 143 MB with 8 MiB and 90 to
/// 105 MB with 6 MiB; with 4 MiB, 69 to 72 MB, and 53 MB once large
/// buffers went back to the system (`malloc_tuning`). Smaller chunks cost
/// more transactions: 4 MiB ran about 5% slower than 6 MiB when first
/// tried, within the noise when tried again.
pub const LIMITS: ChunkLimits =
    ChunkLimits { budget: Duration::from_secs(1), rows: (1_000, 500_000), max_bytes: 4 * 1024 * 1024 };

/// How the log names this copy.
pub const HOW: &str = "copying in chunks of about 1 s";

/// What the stream takes this source's chunks from.
pub type ChunkFeed = chunk_copier::ChunkFeed<ChunkRead>;

/// Reads chunks on its own session.
pub struct PostgresChunks {
    source: Connection,
}

/// Connects the session that reads chunks.
pub async fn open(source: ConnInfo) -> Result<PostgresChunks, ChunkError> {
    // Named apart in pg_stat_activity: the session whose transactions last one chunk each.
    let mut info = source;
    info.application_name.push_str("-copy");
    let source = Connection::connect_plain(&info).await.map_err(ChunkError::Connect)?;
    Ok(PostgresChunks { source })
}

chunk_copier::read_chunk_fields!(ChunkRead);

impl ChunkReader for PostgresChunks {
    type Chunk = ChunkRead;
    type Error = ChunkError;

    /// The planner's row estimate.
    async fn estimate(&mut self, table: &SourceTable) -> Result<i64, ChunkError> {
        let answer = self
            .source
            .simple_query(&format!(
                "SELECT greatest(reltuples, 0)::bigint AS estimate FROM pg_class WHERE oid = {}::regclass",
                quote_literal(&table.quoted())
            ))
            .await
            .map_err(|source| ChunkError::Source { table: table.qualified(), source })?;
        Ok(answer.first("estimate").and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    async fn read(
        &mut self,
        table: &SourceTable,
        start: &TableCopy,
        limit: usize,
        token: &str,
    ) -> Result<ChunkRead, ChunkError> {
        read_chunk(&mut self.source, table, start, limit, token).await
    }
}
