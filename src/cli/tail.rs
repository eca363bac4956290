//! `walpipe tail`: a slot's changes as JSON lines on standard output.
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
use crate::pg::{ConnInfo, Connection};
use crate::pipeline::driver::{self, Ended};
use crate::position::Position;
use crate::source::ChangeStream;
use crate::source::postgres::assembler::Assembler;
use crate::source::postgres::changes::Changes;
use crate::source::postgres::preflight;

/// Streamed transactions kept in memory before spilling to disk.
const SPILL_MEMORY_CAP: usize = 16 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The logical replication slot to read (it must exist and use pgoutput).
    #[arg(long)]
    slot: String,
    /// The publication naming the tables to stream.
    #[arg(long)]
    publication: String,
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
    let info = ConnInfo::parse(&url)?;
    let mut conn = Connection::connect(&info).await?;
    preflight::check_stream(&mut conn, &args.slot, &args.publication).await?;
    let primary_keys = preflight::primary_keys(&mut conn, &args.publication).await?;
    let status_interval = conn.status_interval().await?;
    tracing::info!(source = %info, slot = %args.slot, publication = %args.publication,
        protocol = conn.protocol_version(), "streaming");
    let stream = conn.start_stream(&args.slot, &args.publication, Position::ZERO, status_interval).await?;

    let (ends, sink) = contract::channel();
    let writer = std::thread::spawn(move || write_chunks(sink));
    let assembler = Assembler::new(JsonLines, SPILL_MEMORY_CAP, args.endpos, primary_keys);
    // tail serves no metrics; the driver counts into a registry nobody scrapes.
    let metrics = crate::metrics::global().job("tail", &args.slot);
    let options = driver::Options { end_at: args.endpos, confirm_keepalives: true };
    let changes = Changes::new(stream, assembler, None);
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
