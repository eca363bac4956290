//! Sink commits that are visible at once and acknowledged once durable.
//!
//! The sink session commits with `synchronous_commit = off`: a commit
//! returns as soon as its record is in the sink's WAL buffers, so a change
//! is visible in the sink without waiting for a disk flush (what a native
//! subscription's apply worker does too). Its receipt is held back, and the
//! source confirms nothing of it, until a later commit made with the
//! user's own durability level has returned: that commit flushed the WAL
//! up to itself, so every commit before it is durable too.
//!
//! Invariants:
//! - A receipt goes back only after a durable commit that came after its
//!   own commit ([`HeldReceipts::durable`]). A sink that crashes before
//!   loses at most commits the source still holds: their rows and their
//!   checkpoint go together (one transaction), so the job resumes from the
//!   checkpoint that survived.
//! - Receipts are held about [`HOLD_FOR_FLUSH`]: then the next commit is
//!   durable, or, with no sink transaction open, one is made for them, so
//!   the slot's confirmed position keeps moving.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use crate::contract::Receipt;
use crate::sink::SinkError;

/// The longest a receipt waits for a durable commit.
pub const HOLD_FOR_FLUSH: Duration = Duration::from_millis(100);

/// Receipts of commits not yet known durable; pure bookkeeping.
#[derive(Debug, Default)]
pub struct HeldReceipts {
    /// The newest receipt held (it covers the ones before, see `contract`).
    newest: Option<Receipt>,
    /// When the oldest held commit returned.
    since: Option<Instant>,
}

impl HeldReceipts {
    /// A commit returned (not yet durable); `receipt` covers its chunks.
    pub fn committed(&mut self, receipt: Receipt, now: Instant) {
        self.newest = Some(receipt);
        self.since.get_or_insert(now);
    }

    /// When a durable commit must be made for what is held (`None`: nothing held).
    pub fn flush_due(&self) -> Option<Instant> {
        self.since.map(|since| since + HOLD_FOR_FLUSH)
    }

    /// A durable commit returned after every commit held: their receipt.
    pub fn durable(&mut self) -> Option<Receipt> {
        self.since = None;
        self.newest.take()
    }
}

/// How the session commits: asynchronously, with `durable_level` for the
/// commits that make the others durable.
#[derive(Debug, Clone)]
pub struct CommitLevels {
    durable_level: String,
}

impl CommitLevels {
    /// Reads the session's `synchronous_commit` (the user's, as configured
    /// for the sink's role and database) and switches the session to `off`.
    /// A level that does not flush locally (`off`) becomes `local`.
    pub async fn set_up(client: &Client) -> Result<CommitLevels, SinkError> {
        let rows = client.simple_query("SHOW synchronous_commit").await?;
        let configured = rows
            .iter()
            .find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|| "on".into());
        client.batch_execute("SET synchronous_commit = off").await?;
        Ok(CommitLevels { durable_level: durable_level(&configured).to_string() })
    }

    /// Commits the open transaction with the durable level.
    pub async fn commit_durably(&self, client: &Client) -> Result<(), SinkError> {
        client
            .batch_execute(&format!("SET LOCAL synchronous_commit = {}; COMMIT", self.durable_level))
            .await?;
        Ok(())
    }

    /// Commits a transaction of its own with the durable level, which flushes
    /// the sink's WAL up to it (an xid is taken so that it has a commit record).
    pub async fn make_durable(&self, client: &Client) -> Result<(), SinkError> {
        let sql = format!(
            "BEGIN; SET LOCAL synchronous_commit = {}; SELECT pg_current_xact_id(); COMMIT",
            self.durable_level
        );
        client.batch_execute(&sql).await?;
        Ok(())
    }
}

/// The level a durable commit uses: the configured one, at least `local`.
fn durable_level(configured: &str) -> &str {
    match configured {
        "on" | "local" | "remote_write" | "remote_apply" => configured,
        _ => "local",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_is_held_until_a_durable_commit_and_the_newest_covers_the_rest() {
        let start = Instant::now();
        let mut held = HeldReceipts::default();
        assert_eq!(held.flush_due(), None);
        held.committed(Receipt::of_chunk(1), start);
        held.committed(Receipt::of_chunk(2), start + Duration::from_millis(30));
        assert_eq!(held.flush_due(), Some(start + HOLD_FOR_FLUSH), "due from the oldest commit held");
        assert_eq!(held.durable(), Some(Receipt::of_chunk(2)));
        assert_eq!(held.flush_due(), None);
        assert_eq!(held.durable(), None);
    }

    #[test]
    fn a_durable_commit_flushes_at_least_locally() {
        assert_eq!(durable_level("off"), "local");
        assert_eq!(durable_level("on"), "on");
        assert_eq!(durable_level("remote_apply"), "remote_apply");
        assert_eq!(durable_level("local"), "local");
    }
}
