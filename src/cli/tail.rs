//! `walpipe tail`: a slot's changes as JSON lines on standard output; for a
//! MySQL/MariaDB source, the binlog's, from `--from` (default: now).
//!
//! The protocol loop is `pipeline::driver`; the sink here is a thread that
//! writes each chunk to stdout, flushes, and only then acknowledges it, so
//! a transaction is confirmed to the server once its lines are written.
//! With `--endpos`, transactions committing after that position are not
//! printed, and the command exits 0.

use std::io::Write;

use anyhow::bail;

use crate::change::encode::JsonLines;
use crate::contract::{self, SinkEnds};
use crate::pg::Connection;
use crate::pipeline::driver::{self, Ended};
use crate::position::Position;
use crate::source::mysql::setup::{MysqlSource, position_now};
use crate::source::postgres::assembler::Assembler;
use crate::source::postgres::changes::Changes;
use crate::source::postgres::preflight;
use crate::source::setup::{Source, SourceSettings};
use crate::source::{ChangeStream, SourceTarget};

/// Streamed transactions kept in memory before spilling to disk.
const SPILL_MEMORY_CAP: usize = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The logical replication slot to read (it must exist and use pgoutput; PostgreSQL only).
    #[arg(long)]
    slot: Option<String>,
    /// The publication naming the tables to stream (PostgreSQL only).
    #[arg(long)]
    publication: Option<String>,
    /// Where a MySQL/MariaDB binlog is read from, as walpipe writes binlog
    /// positions (`2A/1F4`: file 42, offset 500); default: the position now.
    #[arg(long)]
    from: Option<Position>,
    /// Stop after the last transaction committed at or before this LSN, and exit 0.
    #[arg(long)]
    endpos: Option<Position>,
    /// The source database URL (default: WALPIPE_SOURCE_URL).
    #[arg(long)]
    source: Option<String>,
}

pub async fn run(args: TailArgs, source_url: Option<String>) -> anyhow::Result<()> {
    let Some(url) = args.source.clone().or(source_url) else {
        bail!(
            "no source given: set WALPIPE_SOURCE_URL or pass --source postgres://user:password@host:5432/dbname"
        );
    };
    let target = SourceTarget::parse(&url).map_err(|e| anyhow::anyhow!("the source URL: {e}"))?;
    // tail serves no metrics; the driver counts into a registry nobody scrapes.
    match target {
        SourceTarget::Postgres(info) => {
            let (Some(slot), Some(publication)) = (args.slot.clone(), args.publication.clone()) else {
                bail!("walpipe tail reads a PostgreSQL slot: pass --slot and --publication");
            };
            let mut conn = Connection::connect(&info).await?;
            preflight::check_stream(&mut conn, &slot, &publication).await?;
            let catalog = crate::pg::sql::connect(&info, "the source").await?;
            let primary_keys = preflight::published(&catalog, &publication).await?.primary_keys;
            drop(catalog);
            let status_interval = conn.status_interval().await?;
            tracing::info!(source = %info, slot = %slot, publication = %publication,
                protocol = conn.protocol_version(), "streaming");
            let stream = conn.start_stream(&slot, &publication, Position::ZERO, status_interval).await?;
            let assembler = Assembler::new(JsonLines, SPILL_MEMORY_CAP, args.endpos, primary_keys);
            let metrics = crate::metrics::global().job("tail", &slot);
            tail(Changes::new(stream, assembler, None), metrics, args.endpos).await
        }
        SourceTarget::Mysql(target) => {
            let settings = SourceSettings {
                job: "tail".into(),
                tables: Vec::new(),
                slot: String::new(),
                publication: String::new(),
                // tail records nothing: no store is ever opened.
                checkpoint_db: crate::job::spec::state_store_not_yet_known(),
                heartbeat: None,
            };
            let from = match args.from {
                Some(from) => from,
                None => position_now(&target).await?,
            };
            let metrics = crate::metrics::global().job("tail", "binlog");
            let mut source = MysqlSource::open(&target, &settings).await?;
            source.tables(false).await?;
            tracing::info!(source = %target, %from, "streaming");
            let started = source.start(from, &metrics).await?;
            tail(started.tail(JsonLines, args.endpos), metrics, args.endpos).await
        }
    }
}

/// Streams `changes` to standard output until the end position, a signal or the server's end.
async fn tail(
    changes: impl ChangeStream,
    metrics: std::sync::Arc<crate::metrics::JobMetrics>,
    end_at: Option<Position>,
) -> anyhow::Result<()> {
    let (ends, sink) = contract::channel();
    let writer = std::thread::spawn(move || write_chunks(sink));
    let options = driver::Options { end_at, confirm_keepalives: true };
    let (stream, outcome) = driver::drive(changes, ends, metrics, options, super::shutdown_signal()).await;

    let written = writer.join().map_err(|_| anyhow::anyhow!("the output thread failed"))?;
    if let Err(error) = written {
        if let Some(stream) = stream {
            let _ = stream.finish().await;
        }
        bail!("could not write to standard output ({error}); stopped after confirming what was written");
    }
    match outcome? {
        Ended::Signal => tracing::info!("stopping on signal"),
        Ended::ServerEnded => tracing::info!("the server ended the stream"),
        Ended::EndPosition => {}
    }
    if let Some(stream) = stream {
        stream.finish().await?;
    }
    Ok(())
}

/// The stdout sink: writes and flushes each chunk, then acknowledges it.
fn write_chunks(mut sink: SinkEnds) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(chunk) = sink.blocking_next() {
        out.write_all(&chunk.lines)?;
        out.flush()?;
        sink.acknowledge(chunk.receipt);
    }
    Ok(())
}
