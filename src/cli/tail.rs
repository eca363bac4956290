//! `walpipe tail`: a slot's changes as JSON lines on standard output.
//!
//! ```text
//!  ReplicationStream ──> Assembler ──> chunks ──(bounded channel)──> writer thread ──> stdout
//!         ^                                                              │
//!         └──────────── confirm(end LSN of the chunk's last commit) <────┘ (after write + flush)
//! ```
//!
//! A transaction's end LSN is confirmed only after the writer thread has
//! written and flushed every line up to it. The protocol loop never blocks
//! on stdout: when the channel is full it keeps the session alive (status
//! updates) while it waits. With `--endpos`, transactions committing after
//! that position are not printed, and the command exits 0.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use tokio::sync::mpsc;

use crate::lsn::Lsn;
use crate::pipeline::assembler::{Assembler, Step};
use crate::source::{ConnInfo, Connection, ReplicationStream, StreamEvent, preflight};

/// Output is handed to the writer in chunks of about this size.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks in flight between the protocol loop and the writer.
const CHUNKS_IN_FLIGHT: usize = 8;
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
    endpos: Option<Lsn>,
    /// The source database URL (default: WALPIPE_SOURCE_URL).
    #[arg(long)]
    source: Option<String>,
}

struct Chunk {
    lines: Vec<u8>,
    /// The end of the last transaction completed by this chunk.
    confirm: Option<Lsn>,
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
    let status_interval = status_interval(&mut conn).await?;
    tracing::info!(source = %info, slot = %args.slot, publication = %args.publication,
        protocol = conn.protocol_version(), "streaming");
    let stream = conn.start_stream(&args.slot, &args.publication, Lsn::ZERO, status_interval).await?;

    let (chunks, chunk_rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<Option<Lsn>>();
    let writer = std::thread::spawn(move || write_chunks(chunk_rx, ack_tx));

    let mut tail =
        Tail { stream, chunks, unacked: 0, pending: Vec::with_capacity(CHUNK_BYTES), pending_confirm: None };
    let outcome =
        tail.pump(&mut acks, Assembler::new(SPILL_MEMORY_CAP, args.endpos, primary_keys), args.endpos).await;

    // Hand over what is pending, then wait for the writer to drain.
    let Tail { mut stream, chunks, pending, pending_confirm, .. } = tail;
    if outcome.is_ok() && (!pending.is_empty() || pending_confirm.is_some()) {
        let _ = chunks.send(Chunk { lines: pending, confirm: pending_confirm }).await;
    }
    drop(chunks);
    while let Some(ack) = acks.recv().await {
        if let Some(lsn) = ack {
            stream.confirm(lsn);
        }
    }
    let written = writer.join().map_err(|_| anyhow::anyhow!("the output thread failed"))?;
    if let Err(error) = written {
        let _ = stream.finish().await;
        bail!("could not write to standard output ({error}); stopped after confirming what was written");
    }
    outcome?;
    stream.finish().await?;
    Ok(())
}

/// A third of `wal_sender_timeout`, at most 10 s, so a status always arrives in time.
async fn status_interval(conn: &mut Connection) -> anyhow::Result<Duration> {
    let timeout = conn
        .simple_query("SELECT setting::bigint AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'")
        .await?;
    let ms: u64 = timeout.first("ms").and_then(|ms| ms.parse().ok()).unwrap_or(60_000);
    let third = if ms == 0 { 10_000 } else { ms / 3 };
    Ok(Duration::from_millis(third.clamp(100, 10_000)))
}

struct Tail {
    stream: ReplicationStream,
    chunks: mpsc::Sender<Chunk>,
    unacked: usize,
    pending: Vec<u8>,
    pending_confirm: Option<Lsn>,
}

impl Tail {
    async fn pump(
        &mut self,
        acks: &mut mpsc::UnboundedReceiver<Option<Lsn>>,
        mut assembler: Assembler,
        endpos: Option<Lsn>,
    ) -> anyhow::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown_signal());
        loop {
            let idle = !self.stream.has_buffered_message();
            if self.pending.len() >= CHUNK_BYTES
                || (idle && (!self.pending.is_empty() || self.pending_confirm.is_some()))
            {
                self.send_pending().await?;
            }
            tokio::select! {
                biased;
                ack = acks.recv() => match ack {
                    Some(ack) => self.acked(ack),
                    None => bail!("the output thread stopped"),
                },
                () = &mut shutdown => {
                    tracing::info!("stopping on signal");
                    return Ok(());
                }
                event = self.stream.next() => match event? {
                    None => {
                        tracing::info!("the server ended the stream");
                        return Ok(());
                    }
                    Some(StreamEvent::Data { lsn, data }) => match assembler.handle(lsn, data, &mut self.pending)? {
                        Step::Continue => {}
                        Step::Committed { end_lsn } => self.pending_confirm = Some(end_lsn),
                        Step::Replay(mut committed) => {
                            while committed.replay_into(&mut self.pending, CHUNK_BYTES).map_err(|error| {
                                anyhow::anyhow!("could not read back a streamed transaction from its temporary file ({error}): check the space in TMPDIR")
                            })?
                            {
                                self.send_pending().await?;
                            }
                            self.pending_confirm = Some(committed.end_lsn);
                        }
                        Step::PastEnd => {
                            tracing::debug!(%lsn, "reached the end position");
                            return Ok(());
                        }
                    },
                    Some(StreamEvent::Keepalive(keepalive)) => {
                        tracing::debug!(wal_end = %keepalive.wal_end, reply = keepalive.reply_requested, "keepalive");
                        let reached = |end: Lsn| keepalive.wal_end >= end;
                        let settled = !assembler.in_transaction()
                            && self.pending.is_empty()
                            && self.pending_confirm.is_none()
                            && self.unacked == 0;
                        if settled {
                            // Nothing received is unwritten: the server's position is safe to confirm,
                            // so a quiet database does not pin WAL written elsewhere.
                            let position = endpos.map_or(keepalive.wal_end, |end| end.min(keepalive.wal_end));
                            self.stream.confirm(position);
                        }
                        if !assembler.in_transaction() && endpos.is_some_and(reached) {
                            tracing::debug!(wal_end = %keepalive.wal_end, "a keepalive reached the end position");
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn acked(&mut self, ack: Option<Lsn>) {
        self.unacked -= 1;
        if let Some(lsn) = ack {
            self.stream.confirm(lsn);
        }
    }

    /// Hands the pending lines to the writer. While the writer is behind,
    /// keeps the replication session alive instead of blocking it.
    async fn send_pending(&mut self) -> anyhow::Result<()> {
        let permit = loop {
            tokio::select! {
                permit = self.chunks.reserve() => break permit.map_err(|_| anyhow::anyhow!("the output thread stopped"))?,
                kept = self.stream.keep_alive(Duration::from_millis(500)) => kept?,
            }
        };
        let lines = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_BYTES));
        permit.send(Chunk { lines, confirm: self.pending_confirm.take() });
        self.unacked += 1;
        Ok(())
    }
}

/// The writer thread: writes and flushes each chunk, then acknowledges it.
fn write_chunks(
    mut chunks: mpsc::Receiver<Chunk>,
    acks: mpsc::UnboundedSender<Option<Lsn>>,
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some(chunk) = chunks.blocking_recv() {
        out.write_all(&chunk.lines)?;
        out.flush()?;
        if acks.send(chunk.confirm).is_err() {
            break;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
