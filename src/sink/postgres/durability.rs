//! Sink commits that are visible at once and acknowledged once the sink
//! server says they are on disk.
//!
//! Without synchronous standbys on the sink, its session commits with
//! `synchronous_commit = off`: a commit returns as soon as its record is in
//! the server's WAL buffers, so a change is visible without waiting for a
//! disk flush (as a native subscription's apply worker commits). The
//! commit's receipt is held with the server's WAL insert position read
//! right after it (at or past the commit's record), and goes back once the
//! server's flush position (`pg_current_wal_flush_lsn()`) has reached it.
//! The WAL writer flushes within `wal_writer_delay` (200 ms by default), and
//! every synchronous commit on the server flushes all WAL before its own.
//! The flush position comes with every commit and, while receipts are
//! held and no transaction is open, is read every [`FLUSH_POLL`].
//!
//! With synchronous standbys (`synchronous_standby_names` set), commits
//! stay synchronous and are acknowledged as they return: the user asked for
//! each commit to reach a standby, which the local flush position does not
//! tell.
//!
//! Invariants:
//! - A receipt goes back only when the server's flush position has passed
//!   its commit's record. A sink server that crashes loses at most commits
//!   whose receipts are still held, so the source has not confirmed them;
//!   their rows and their checkpoint went together (one transaction), so
//!   the job resumes from the checkpoint that survived.
//! - Receipts go back in the order of their commits.
//! - At the end of the stream a synchronous commit of its own flushes
//!   everything, so every receipt goes back before the driver returns.

use std::collections::VecDeque;
use std::time::Duration;

use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Statement};

use crate::contract::Receipt;
use crate::sink::SinkError;

/// The COMMIT behind a statement that fails in a failed transaction: the
/// server then skips the rest of the query, so the transaction stays open
/// (a bare COMMIT would roll it back) and can be rolled back to a savepoint.
pub const GUARDED_COMMIT: &str = "SELECT 1; COMMIT";

/// What a commit returned: the server's WAL insert and flush positions
/// read right after it (when watched).
#[derive(Debug)]
pub struct Committed {
    positions: Option<(u64, u64)>,
}

/// How often the flush position is read while receipts are held.
pub const FLUSH_POLL: Duration = Duration::from_millis(20);

/// How the sink session's commits become durable.
pub enum Durability {
    /// Each commit is synchronous: its receipt goes back when it returns.
    AtCommit,
    /// Commits are asynchronous; receipts wait for the flush position.
    Watched { positions: Statement, held: HeldReceipts },
}

impl Durability {
    /// Commits asynchronously unless the sink has synchronous standbys.
    pub async fn set_up(client: &Client) -> Result<Durability, SinkError> {
        let standbys = client.query_one("SELECT current_setting('synchronous_standby_names')", &[]).await?;
        if !standbys.get::<_, String>(0).trim().is_empty() {
            return Ok(Durability::AtCommit);
        }
        client.batch_execute("SET synchronous_commit = off").await?;
        let positions =
            client.prepare("SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()").await?;
        Ok(Durability::Watched { positions, held: HeldReceipts::default() })
    }

    /// Runs `last` (the checkpoint's write), then commits the open
    /// transaction. Pipelined: `last`, the COMMIT and (when watched) the
    /// positions go in one round trip, each queued at the first poll. The
    /// COMMIT is guarded ([`GUARDED_COMMIT`]): after an error of `last`, or
    /// of anything queued before it, the transaction stays open and failed,
    /// and the error is returned. The caller rolls back to a savepoint and
    /// commits again, or ends the session.
    pub async fn commit(
        &self,
        client: &Client,
        last: impl Future<Output = Result<(), tokio_postgres::Error>>,
    ) -> Result<Committed, SinkError> {
        match self {
            Durability::AtCommit => {
                tokio::try_join!(last, client.batch_execute(GUARDED_COMMIT))?;
                Ok(Committed { positions: None })
            }
            Durability::Watched { positions, .. } => {
                let (_, _, row) = tokio::try_join!(
                    last,
                    client.batch_execute(GUARDED_COMMIT),
                    client.query_one(positions, &[])
                )?;
                Ok(Committed { positions: Some((lsn(row.get(0)), lsn(row.get(1)))) })
            }
        }
    }

    /// The receipts durable once `committed` returned; `receipt`, its
    /// chunk's, is held until the server's flush position passes the commit.
    pub fn settle(&mut self, committed: Committed, receipt: Option<Receipt>) -> Option<Receipt> {
        match (self, committed.positions) {
            (Durability::Watched { held, .. }, Some((insert, flush))) => {
                if let Some(receipt) = receipt {
                    held.hold(insert, receipt);
                }
                held.release(flush)
            }
            _ => receipt,
        }
    }

    /// A receipt whose chunk needed no commit of its own: it goes back
    /// with the commits before it, never ahead of them.
    pub fn without_commit(&mut self, receipt: Receipt) -> Option<Receipt> {
        match self {
            Durability::Watched { held, .. } if held.holding() => {
                held.hold_with_last(receipt);
                None
            }
            _ => Some(receipt),
        }
    }

    /// Whether receipts wait for the flush position.
    pub fn holding(&self) -> bool {
        matches!(self, Durability::Watched { held, .. } if held.holding())
    }

    /// Reads the flush position; returns the receipts now durable.
    pub async fn poll(&mut self, client: &Client) -> Result<Option<Receipt>, SinkError> {
        let Durability::Watched { positions, held } = self else { return Ok(None) };
        let row = client.query_one(&*positions, &[]).await?;
        Ok(held.release(lsn(row.get(1))))
    }

    /// Flushes the server's WAL with a synchronous commit of its own (an
    /// xid makes it write a commit record); returns every receipt held.
    /// Outside a transaction.
    pub async fn flush(&mut self, client: &Client) -> Result<Option<Receipt>, SinkError> {
        if !self.holding() {
            return Ok(None);
        }
        client
            .batch_execute("BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT")
            .await?;
        self.poll(client).await
    }
}

fn lsn(position: PgLsn) -> u64 {
    u64::from(position)
}

/// Receipts of commits not yet flushed, with the WAL position each waits
/// for; pure bookkeeping.
#[derive(Debug, Default)]
pub struct HeldReceipts {
    waiting: VecDeque<(u64, Receipt)>,
}

impl HeldReceipts {
    /// A commit returned; it is durable once the flush position reaches `lsn`.
    pub fn hold(&mut self, lsn: u64, receipt: Receipt) {
        self.waiting.push_back((lsn, receipt));
    }

    pub fn holding(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// A receipt that waits for the same flush as the newest one held.
    pub fn hold_with_last(&mut self, receipt: Receipt) {
        let lsn = self.waiting.back().map_or(0, |(lsn, _)| *lsn);
        self.waiting.push_back((lsn, receipt));
    }

    /// The WAL is flushed up to `flushed`: the newest receipt that became
    /// durable (it covers the ones before it).
    pub fn release(&mut self, flushed: u64) -> Option<Receipt> {
        let mut newest = None;
        while self.waiting.front().is_some_and(|(lsn, _)| *lsn <= flushed) {
            newest = self.waiting.pop_front().map(|(_, receipt)| receipt);
        }
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_goes_back_once_the_flush_passes_its_commit_and_in_order() {
        let mut held = HeldReceipts::default();
        held.hold(100, Receipt::of_chunk(1));
        held.hold(200, Receipt::of_chunk(2));
        held.hold(300, Receipt::of_chunk(3));
        assert_eq!(held.release(99), None);
        assert_eq!(held.release(250), Some(Receipt::of_chunk(2)));
        assert!(held.holding());
        assert_eq!(held.release(250), None);
        held.hold_with_last(Receipt::of_chunk(4));
        assert_eq!(held.release(299), None);
        assert_eq!(held.release(300), Some(Receipt::of_chunk(4)));
        assert!(!held.holding());
    }
}
